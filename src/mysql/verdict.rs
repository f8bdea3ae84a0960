//! The clustercheck script's decision, on values read by [`super::check`].
//!
//! In the script's order: state 4 (Synced), or 2 (Donor/Desynced) when donors count, is
//! usable — unless read-only nodes do not count and `read_only` is ON. Anything else
//! (Joining, Joined, a donor without the flag, no state at all) is "not synced". A
//! missing `read_only` value is not ON, as in the script's string comparison.

use super::GaleraStatus;

pub const NOT_SYNCED: &str = "Galera cluster node is not synced.";
pub const READ_ONLY: &str = "Galera cluster node is read-only.";

/// `Ok(())` = usable; `Err(text)` = why not, in the RHEL/MariaDB script's words.
pub fn galera_verdict(
    status: &GaleraStatus,
    available_when_donor: bool,
    available_when_readonly: bool,
) -> Result<(), String> {
    let synced = match status.wsrep_local_state {
        Some(4) => true,
        Some(2) => available_when_donor,
        _ => false,
    };
    if !synced {
        return Err(NOT_SYNCED.to_string());
    }
    if !available_when_readonly && status.read_only == Some(true) {
        return Err(READ_ONLY.to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_table() {
        // (state, read_only, donor flag, readonly flag) → verdict
        let ok = Ok(());
        let ns = Err(NOT_SYNCED.to_string());
        let ro = Err(READ_ONLY.to_string());
        type Case<'a> = (Option<u32>, Option<bool>, bool, bool, &'a Result<(), String>);
        #[rustfmt::skip]
        let table: &[Case] = &[
            // Synced.
            (Some(4), Some(false), false, true,  &ok),
            (Some(4), Some(true),  false, true,  &ok),  // read-only allowed (the default)
            (Some(4), Some(true),  false, false, &ro),
            (Some(4), Some(false), false, false, &ok),
            (Some(4), None,        false, false, &ok),  // no value is not "ON"
            (Some(4), Some(true),  true,  false, &ro),
            // Donor / desynced: only with the donor flag.
            (Some(2), Some(false), false, true,  &ns),
            (Some(2), Some(false), true,  true,  &ok),
            (Some(2), Some(true),  true,  false, &ro),
            (Some(2), Some(true),  false, false, &ns),  // not synced wins over read-only
            // Joining, joined, unknown, none.
            (Some(1), Some(false), true,  true,  &ns),
            (Some(3), Some(false), true,  true,  &ns),
            (Some(0), Some(false), true,  true,  &ns),
            (Some(5), Some(false), true,  true,  &ns),
            (None,    Some(false), true,  true,  &ns),  // not a Galera node / no answer
            (None,    None,        false, false, &ns),
        ];
        for &(state, read_only, donor, readonly, want) in table {
            let status = GaleraStatus { wsrep_local_state: state, read_only };
            assert_eq!(&galera_verdict(&status, donor, readonly), want, "{status:?} donor={donor} readonly={readonly}");
        }
    }
}
