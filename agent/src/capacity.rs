//! The node's capacity: cores and memory read from the host (or given), minus a reservation.

use berth_proto::v1::Resources;

pub use berth_proto::quantity::{parse_cpu, parse_memory};

/// The host's cores (as the scheduler may use them: the cpuset this process may run on) and
/// physical memory.
pub fn host_total() -> Resources {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024);
    Resources {
        cpu_millis: cpus * 1000,
        memory_bytes: memory,
    }
}

/// Total minus the reservation for the system and the agent, never below zero.
pub fn allocatable(total: &Resources, reserved: &Resources) -> Resources {
    Resources {
        cpu_millis: total.cpu_millis.saturating_sub(reserved.cpu_millis),
        memory_bytes: total.memory_bytes.saturating_sub(reserved.memory_bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_has_cores_and_memory_and_reservation_saturates() {
        let total = host_total();
        assert!(total.cpu_millis >= 1000 && total.memory_bytes > 0);
        let a = allocatable(
            &total,
            &Resources {
                cpu_millis: u64::MAX,
                memory_bytes: 1,
            },
        );
        assert_eq!(a.cpu_millis, 0);
        assert_eq!(a.memory_bytes, total.memory_bytes - 1);
    }
}
