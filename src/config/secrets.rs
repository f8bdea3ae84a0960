//! Files holding secrets — TLS private keys, the admin token, passwords — should be
//! readable by vipgate's user alone. A looser mode is not an error (the operator may have
//! reasons, and refusing would take a VIP down on a reload), but `vipgate check`, start
//! and reload say so, and so does `vipgate clustercheck` at start for its credentials file.

use std::path::Path;

use super::{CheckKind, Config};

/// Who besides the owner may read a secret file without a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readers {
    /// TLS keys and the token: group read is a common, deliberate setup (a key group such
    /// as Debian's ssl-cert); others never are.
    OwnerAndGroup,
    /// Passwords: no convention shares them with a group, so any read bit past the owner's
    /// is worth a warning.
    Owner,
}

/// One warning per secret file that group or others may read (or write).
pub fn loose_secret_files(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen: Vec<&Path> = Vec::new();
    let keys = cfg
        .services
        .iter()
        .filter_map(|s| s.http.as_ref()?.tls.as_ref())
        .flat_map(|t| t.certificates.iter().map(|c| ("TLS private key", c.key.as_path(), Readers::OwnerAndGroup)));
    let token = cfg
        .admin
        .as_ref()
        .and_then(|a| a.token_file.as_deref())
        .map(|p| ("admin token file", p, Readers::OwnerAndGroup));
    let passwords = cfg
        .services
        .iter()
        .flat_map(|s| s.check.iter().chain(s.pool_checks.iter().map(|(_, c)| c)))
        .filter_map(|c| match &c.kind {
            CheckKind::Mysql(m) => m.password_file.as_deref(),
            _ => None,
        })
        .map(|p| ("mysql check password_file", p, Readers::Owner));
    for (what, path, readers) in keys.chain(token).chain(passwords) {
        if seen.contains(&path) {
            continue;
        }
        seen.push(path);
        out.extend(loose_secret_file(what, path, readers));
    }
    out
}

/// The warning for one secret file, if its mode lets more than `readers` read it (or
/// anyone but the owner write it).
pub fn loose_secret_file(what: &str, path: &Path, readers: Readers) -> Option<String> {
    let mode = file_mode(path)?;
    let (too_open, advice) = match readers {
        Readers::OwnerAndGroup => (0o027, "make it 0600 or 0640 owned by vipgate's user"),
        Readers::Owner => (0o077, "make it 0600 owned by the user that reads it"),
    };
    (mode & too_open != 0)
        .then(|| format!("{what} {} is readable by group or others (mode {mode:04o}); {advice}", path.display()))
}

#[cfg(unix)]
fn file_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    Some(std::fs::metadata(path).ok()?.permissions().mode() & 0o7777)
}

#[cfg(not(unix))]
fn file_mode(_: &Path) -> Option<u32> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_for_their_owner_and_keys_may_be_for_a_group() {
        use std::os::unix::fs::PermissionsExt;
        let p = std::env::temp_dir().join(format!("vipgate-secret-{}", std::process::id()));
        std::fs::write(&p, "x").unwrap();
        for (mode, key_warns, password_warns) in [
            (0o600, false, false),
            (0o400, false, false),
            (0o640, false, true),
            (0o604, true, true),
            (0o660, true, true),
        ] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let key = loose_secret_file("key", &p, Readers::OwnerAndGroup);
            let password = loose_secret_file("password", &p, Readers::Owner);
            assert_eq!((key.is_some(), password.is_some()), (key_warns, password_warns), "{mode:04o}");
            if let Some(w) = password {
                assert!(w.contains(&format!("{mode:04o}")) && w.contains(&p.display().to_string()), "{w}");
            }
        }
        let _ = std::fs::remove_file(&p);
    }
}
