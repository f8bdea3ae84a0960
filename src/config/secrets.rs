//! Files holding secrets — TLS private keys and the admin token — should be readable by
//! vipgate's user alone. A looser mode is not an error (the operator may have reasons,
//! and refusing would take a VIP down on a reload), but `vipgate check`, start and
//! reload say so.

use std::path::Path;

use super::Config;

/// One warning per secret file that group or others may read (or write).
pub fn loose_secret_files(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen: Vec<&Path> = Vec::new();
    let keys = cfg
        .services
        .iter()
        .filter_map(|s| s.http.as_ref()?.tls.as_ref())
        .flat_map(|t| t.certificates.iter().map(|c| ("TLS private key", c.key.as_path())));
    let token = cfg.admin.as_ref().and_then(|a| a.token_file.as_deref()).map(|p| ("admin token file", p));
    for (what, path) in keys.chain(token) {
        if seen.contains(&path) {
            continue;
        }
        seen.push(path);
        if let Some(mode) = loose_mode(path) {
            out.push(format!(
                "{what} {} is readable by group or others (mode {mode:04o}); make it 0600 or 0640 owned by vipgate's user",
                path.display()
            ));
        }
    }
    out
}

#[cfg(unix)]
fn loose_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    // Group read is a common, deliberate setup (a key group); others never are.
    (mode & 0o027 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn loose_mode(_: &Path) -> Option<u32> {
    None
}
