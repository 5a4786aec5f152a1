//! The replication queue's two decisions per task, besides its place in the dispatch order
//! ([`crate::schedule::dispatch_order`]): whether it takes the express lane, and which node it
//! copies to.

use crate::schedule::{self, Node};

/// Whether a task goes to the express lane: its shard's forecast lower bound (None when it has
/// no forecast) is above `threshold` ([`schedule::prefetch_threshold`]) and above zero.
pub fn express(lower: Option<f64>, threshold: f64) -> bool {
    lower.is_some_and(|l| l > threshold && l > 0.0)
}

/// The node a task of `bytes` copies to, taking its share of that node's work: its
/// `requested_node` when it was given one (counted against that node if it is among `nodes`),
/// else the node that finishes it first among those that no other open task of the shard
/// copies to (`taken`). None when no node is left.
pub fn node_for(
    bytes: f64,
    requested_node: Option<String>,
    taken: &[String],
    nodes: &mut [Node],
) -> Option<String> {
    match requested_node {
        Some(fixed) => {
            if let Some(n) = nodes.iter_mut().find(|n| n.name == fixed) {
                n.assigned_bytes += bytes.max(schedule::MIN_TASK_BYTES);
            }
            Some(fixed)
        }
        None => schedule::assign_node_except(bytes, nodes, |n| taken.contains(&n.name))
            .map(|n| nodes[n].name.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, capacity: f64) -> Node {
        Node {
            name: name.into(),
            capacity,
            load: 0.0,
            assigned_bytes: 0.0,
        }
    }

    #[test]
    fn express_needs_a_positive_lower_bound_above_the_threshold() {
        assert!(express(Some(10.0), 5.0));
        assert!(!express(Some(5.0), 5.0));
        assert!(!express(None, 5.0));
        assert!(!express(Some(0.0), -1.0));
        assert!(!express(Some(1e300), f64::INFINITY));
    }

    #[test]
    fn a_requested_node_is_kept_and_counted() {
        let mut nodes = vec![node("a", 100.0), node("b", 100.0)];
        assert_eq!(
            node_for(10.0, Some("b".into()), &[], &mut nodes),
            Some("b".into())
        );
        assert_eq!(nodes[1].assigned_bytes, schedule::MIN_TASK_BYTES);
        assert_eq!(nodes[0].assigned_bytes, 0.0);
        // A requested node that is not an enabled node is kept, and counts against nothing.
        assert_eq!(
            node_for(1e6, Some("gone".into()), &[], &mut nodes),
            Some("gone".into())
        );
        assert_eq!(nodes[1].assigned_bytes, schedule::MIN_TASK_BYTES);
    }

    #[test]
    fn assignment_avoids_nodes_the_shard_already_goes_to() {
        let mut nodes = vec![node("fast", 1000.0), node("slow", 1.0)];
        assert_eq!(node_for(1e6, None, &[], &mut nodes), Some("fast".into()));
        assert_eq!(
            node_for(1e6, None, &["fast".into()], &mut nodes),
            Some("slow".into())
        );
        assert_eq!(
            node_for(1e6, None, &["fast".into(), "slow".into()], &mut nodes),
            None
        );
        assert_eq!(node_for(1e6, None, &[], &mut []), None);
    }
}
