//! Node assignment: each task to the node that would finish it earliest.

use super::MIN_TASK_BYTES;

/// A replication node.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub name: String,
    /// Bytes per second.
    pub capacity: f64,
    /// Current load, 0-1: the share of its capacity already in use.
    pub load: f64,
    /// Bytes already assigned to it.
    pub assigned_bytes: f64,
}

impl Node {
    /// Seconds until the node would have copied `extra` more bytes after what it has.
    fn finish_after(&self, extra: f64) -> f64 {
        let free = self.capacity * (1.0 - self.load.clamp(0.0, 0.99));
        if free > 0.0 {
            (self.assigned_bytes + extra) / free
        } else {
            f64::INFINITY
        }
    }
}

/// Assigns tasks, in the given (priority) order, each to the node that would finish it
/// earliest: the lowest (current load + assigned work) / capacity. Hot shards land on fast,
/// idle nodes. Returns the node index per task (in the order given); None without nodes.
pub fn assign_nodes(task_bytes: &[f64], nodes: &mut [Node]) -> Vec<Option<usize>> {
    task_bytes
        .iter()
        .map(|&bytes| assign_node_except(bytes, nodes, |_| false))
        .collect()
}

/// Assigns one task as [`assign_nodes`] does, to a node that `excluded` does not rule out (one
/// that already has the shard coming, say). None when no node is left.
pub fn assign_node_except(
    bytes: f64,
    nodes: &mut [Node],
    excluded: impl Fn(&Node) -> bool,
) -> Option<usize> {
    let bytes = bytes.max(MIN_TASK_BYTES);
    let best = (0..nodes.len())
        .filter(|&n| !excluded(&nodes[n]))
        .min_by(|&a, &b| {
            nodes[a]
                .finish_after(bytes)
                .total_cmp(&nodes[b].finish_after(bytes))
                .then(a.cmp(&b))
        })?;
    nodes[best].assigned_bytes += bytes;
    Some(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_work_lands_on_fast_idle_nodes() {
        let mut nodes = vec![
            Node {
                name: "slow".into(),
                capacity: 10e6,
                load: 0.0,
                assigned_bytes: 0.0,
            },
            Node {
                name: "fast".into(),
                capacity: 100e6,
                load: 0.0,
                assigned_bytes: 0.0,
            },
            Node {
                name: "busy".into(),
                capacity: 100e6,
                load: 0.95,
                assigned_bytes: 0.0,
            },
        ];
        let assigned = assign_nodes(&[50e6, 50e6, 50e6, 10e6], &mut nodes);
        assert_eq!(assigned[0], Some(1));
        let fast = assigned.iter().filter(|a| **a == Some(1)).count();
        assert!(fast >= 3, "{assigned:?}");
        assert_eq!(assign_nodes(&[1.0], &mut []), vec![None]);
        // A node ruled out (it already has the shard coming) is passed over, even if fastest.
        let best = assign_node_except(1.0, &mut nodes, |n| n.name == "fast");
        assert_ne!(best.map(|b| nodes[b].name.as_str()), Some("fast"));
        assert_eq!(assign_node_except(1.0, &mut nodes, |_| true), None);
    }
}
