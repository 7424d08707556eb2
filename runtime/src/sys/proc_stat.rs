//! `/proc/PID/stat`: a process's state letter and start time, the pair that tells a live
//! process from a zombie and from a later one that reuses its pid.

/// The fields of `/proc/PID/stat` berth reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 3: R, S, D, Z (zombie), X (dead), ...
    pub state: char,
    /// Field 22: clock ticks after boot at which the process started.
    pub start_time: u64,
}

impl ProcStat {
    /// Whether the process has ended (zombie or dead).
    pub fn ended(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// Parses one `/proc/PID/stat` line; None when it is cut short or malformed.
pub fn parse(stat: &str) -> Option<ProcStat> {
    // The command name (field 2) may hold spaces and parentheses: fields resume after the
    // last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Field 3 was the state; field 22 is 19 further on.
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(ProcStat { state, start_time })
}

/// The stat of `pid`, or None when it does not exist (or its stat cannot be read).
pub fn read(pid: i32) -> Option<ProcStat> {
    parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The stat of the calling process.
pub fn read_self() -> Option<ProcStat> {
    parse(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// Whether `pid` runs (is no zombie) and started at `start_time`: the same process, not a
/// later one with a reused pid.
pub fn is_alive(pid: i32, start_time: u64) -> bool {
    pid > 0 && read(pid).is_some_and(|s| s.start_time == start_time && !s.ended())
}

#[cfg(test)]
mod tests {
    use super::{ProcStat, parse};

    fn line(comm: &str, state: char) -> String {
        format!(
            "1234 ({comm}) {state} 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 200"
        )
    }

    #[test]
    fn awkward_command_names() {
        for comm in ["sh", "a b", "a) b (c", "a b) c))", ") S 1 2 3", "(", ""] {
            assert_eq!(
                parse(&line(comm, 'S')),
                Some(ProcStat {
                    state: 'S',
                    start_time: 98765
                }),
                "comm {comm:?}"
            );
        }
    }

    #[test]
    fn zombie_and_dead_have_ended() {
        assert!(parse(&line("x", 'Z')).unwrap().ended());
        assert!(parse(&line("x", 'X')).unwrap().ended());
        assert!(!parse(&line("x", 'R')).unwrap().ended());
    }

    #[test]
    fn short_or_malformed_lines_are_none() {
        assert_eq!(parse("12 (x) R 1"), None);
        assert_eq!(parse("12 x R 1"), None);
        assert_eq!(parse(""), None);
        assert_eq!(parse(&line("x", 'S').replace("98765", "soon")), None);
    }

    #[test]
    fn this_process_is_alive_with_its_own_start_time() {
        let me = super::read_self().expect("own stat");
        let pid = nix::unistd::getpid().as_raw();
        assert_eq!(super::read(pid), Some(me));
        assert!(super::is_alive(pid, me.start_time));
        assert!(!super::is_alive(pid, me.start_time + 1));
        assert!(!super::is_alive(0, me.start_time));
    }
}
