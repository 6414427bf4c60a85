//! Failure detection: a node that does not answer our PING within `cluster-node-timeout` is
//! PFAIL (our opinion); masters gossip their PFAIL/FAIL opinions as failure reports; when the
//! reports of a majority of slot-owning masters (us included, if we are one) are fresh
//! (younger than 2 × node timeout), the node is FAIL and a FAIL message is broadcast.
//! FAIL is cleared when a replica or slot-less master is reachable again, or when a master
//! with slots has been reachable again for a while (nobody failed it over).

use super::{NodeId, State, FAIL, MYSELF, NOADDR, PFAIL};

/// Failure reports older than `node_timeout * this` are ignored.
pub const REPORT_VALIDITY_MULT: u64 = 2;
/// A FAIL master with slots is un-failed after `node_timeout * this` of reachability.
pub const FAIL_UNDO_TIME_MULT: u64 = 2;

impl State {
    /// Records that `reporter` sees `node` as failing; true when it is a new report.
    pub fn add_failure_report(&mut self, node: NodeId, reporter: NodeId, now: u64) -> bool {
        let Some(n) = self.nodes.get_mut(&node) else {
            return false;
        };
        if let Some(r) = n.fail_reports.iter_mut().find(|(r, _)| *r == reporter) {
            r.1 = now;
            return false;
        }
        n.fail_reports.push((reporter, now));
        true
    }

    /// Removes `reporter`'s report about `node`.
    pub fn del_failure_report(&mut self, node: NodeId, reporter: NodeId) {
        if let Some(n) = self.nodes.get_mut(&node) {
            n.fail_reports.retain(|(r, _)| *r != reporter);
        }
    }

    /// Drops stale reports and returns how many valid ones remain (CLUSTER
    /// COUNT-FAILURE-REPORTS).
    pub fn count_failure_reports(&mut self, node: NodeId, now: u64) -> usize {
        let max_age = self.node_timeout * REPORT_VALIDITY_MULT;
        match self.nodes.get_mut(&node) {
            Some(n) => {
                n.fail_reports
                    .retain(|(_, t)| now.saturating_sub(*t) <= max_age);
                n.fail_reports.len()
            }
            None => 0,
        }
    }

    /// Promotes PFAIL to FAIL when a majority of masters agree, broadcasting FAIL.
    pub fn mark_failing_if_needed(&mut self, node: NodeId, now: u64) {
        let quorum = self.size / 2 + 1;
        let Some(n) = self.nodes.get(&node) else {
            return;
        };
        if !n.pfailed() || n.failed() {
            return;
        }
        let mut failures = self.count_failure_reports(node, now);
        if self.me().is_master() {
            failures += 1;
        }
        if failures < quorum {
            return;
        }
        self.log.push((
            false,
            format!("Marking node {node} as failing (quorum reached)."),
        ));
        if let Some(n) = self.nodes.get_mut(&node) {
            n.flags &= !PFAIL;
            n.flags |= FAIL;
            n.fail_time = now;
        }
        self.send_fail(node);
        self.todo_save = true;
    }

    /// Clears FAIL on a node that is reachable again, when safe.
    pub fn clear_failure_if_needed(&mut self, node: NodeId, now: u64) {
        let timeout = self.node_timeout;
        let Some(n) = self.nodes.get_mut(&node) else {
            return;
        };
        if !n.failed() {
            return;
        }
        if n.is_slave() || n.slots.is_empty() {
            n.flags &= !FAIL;
            self.log.push((
                false,
                format!("Clear FAIL state for node {node}: is reachable again."),
            ));
            self.todo_save = true;
        } else if now.saturating_sub(n.fail_time) > timeout * FAIL_UNDO_TIME_MULT {
            n.flags &= !FAIL;
            self.log.push((
                false,
                format!(
                    "Clear FAIL state for node {node}: is reachable again and nobody is serving its slots after some time."
                ),
            ));
            self.todo_save = true;
        }
    }

    /// Cron check: a pending PING older than the node timeout makes the node PFAIL.
    pub fn check_pfail(&mut self, node: NodeId, now: u64) {
        let timeout = self.node_timeout;
        let Some(n) = self.nodes.get_mut(&node) else {
            return;
        };
        if n.flags & (MYSELF | NOADDR) != 0 || n.ping_sent == 0 {
            return;
        }
        let ping_delay = now.saturating_sub(n.ping_sent);
        let data_delay = now.saturating_sub(n.data_received);
        if ping_delay.min(data_delay) > timeout && n.flags & (PFAIL | FAIL) == 0 {
            n.flags |= PFAIL;
            self.todo_ping_masters = true;
            self.log
                .push((false, format!("*** NODE {node} possibly failing")));
            self.mark_failing_if_needed(node, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Node, MASTER};
    use super::*;

    fn cluster_of(n: usize) -> (State, Vec<NodeId>) {
        let mut st = State::new(0);
        st.node_timeout = 1000;
        let me = st.myself;
        st.add_slot(0, me);
        let mut ids = Vec::new();
        for i in 0..n {
            let id = NodeId::random();
            let mut node = Node::new(id, MASTER, 0);
            node.slots.set(i as u16 + 1);
            st.nodes.insert(id, node);
            st.slots[i + 1] = Some(id);
            ids.push(id);
        }
        st.size = n + 1;
        (st, ids)
    }

    #[test]
    fn reports_age_out() {
        let (mut st, ids) = cluster_of(4);
        assert!(st.add_failure_report(ids[0], ids[1], 1000));
        assert!(!st.add_failure_report(ids[0], ids[1], 1500));
        assert!(st.add_failure_report(ids[0], ids[2], 1000));
        assert_eq!(st.count_failure_reports(ids[0], 2000), 2);
        // ids[1]'s report was refreshed at 1500: valid until 3500.
        assert_eq!(st.count_failure_reports(ids[0], 3200), 1);
        assert_eq!(st.count_failure_reports(ids[0], 3600), 0);
        st.add_failure_report(ids[0], ids[3], 4000);
        st.del_failure_report(ids[0], ids[3]);
        assert_eq!(st.count_failure_reports(ids[0], 4000), 0);
    }

    #[test]
    fn pfail_then_fail_with_majority() {
        let (mut st, ids) = cluster_of(4); // 5 masters: quorum 3
        let x = ids[0];
        if let Some(n) = st.nodes.get_mut(&x) {
            n.ping_sent = 100;
        }
        st.check_pfail(x, 500);
        assert!(!st.nodes[&x].pfailed());
        st.check_pfail(x, 1200);
        assert!(st.nodes[&x].pfailed());
        assert!(!st.nodes[&x].failed());
        // Me + one report: 2 < 3.
        st.add_failure_report(x, ids[1], 1200);
        st.mark_failing_if_needed(x, 1200);
        assert!(!st.nodes[&x].failed());
        st.add_failure_report(x, ids[2], 1300);
        st.mark_failing_if_needed(x, 1300);
        assert!(st.nodes[&x].failed());
        assert!(!st.nodes[&x].pfailed());
        // Reachable again, but it owns slots: FAIL stays until the undo time.
        st.clear_failure_if_needed(x, 1400);
        assert!(st.nodes[&x].failed());
        st.clear_failure_if_needed(x, 1300 + 2001);
        assert!(!st.nodes[&x].failed());
    }
}
