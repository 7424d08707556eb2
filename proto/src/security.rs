//! The checks a `SecurityContext`'s text fields get on both sides (the CLI reading a spec file,
//! the scheduler validating what it stores), so that both accept the same values.

/// `user[:group]`: one or two non-empty parts.
pub fn check_run_as(text: &str) -> Result<(), String> {
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() > 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(format!("{text:?} is not user[:group]"));
    }
    Ok(())
}

/// A capability name as the kernel spells it: `net_admin`, `NET_ADMIN` and `CAP_NET_ADMIN`
/// all become `CAP_NET_ADMIN` (and `all` becomes `CAP_ALL`).
pub fn full_cap_name(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase();
    if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_as_and_cap_names() {
        assert!(check_run_as("1000").is_ok());
        assert!(check_run_as("app:staff").is_ok());
        for bad in ["", ":1", "1:", "a:b:c"] {
            assert!(check_run_as(bad).is_err(), "{bad:?}");
        }
        assert_eq!(full_cap_name("net_admin"), "CAP_NET_ADMIN");
        assert_eq!(full_cap_name("CAP_KILL"), "CAP_KILL");
    }
}
