//! Failover, as Redis Cluster does it: replica elections (automatic when the master is FAIL,
//! manual with `CLUSTER FAILOVER [FORCE|TAKEOVER]`), the masters' votes, and replica
//! migration to orphaned masters.
//!
//! Everything here is pure [`State`] logic driven by the bus cron (every 100 ms) and by
//! incoming bus messages; the replication side is reached only through [`ReplView`] (my
//! offset and how long my link to the master has been down) and the pause / unpause requests
//! queued in [`Failover`] for the bus to apply.
//!
//! - Election (replica of a FAIL master serving slots): after 200 ms + random 0..300 ms +
//!   rank × 1000 ms (rank = how many sibling replicas announce a larger replication offset),
//!   bump currentEpoch and broadcast FAILOVER_AUTH_REQUEST; with ACKs from a majority of the
//!   slot-owning masters within max(2 × node timeout, 2 s), take the master's slots with the
//!   election epoch as config epoch and broadcast PONGs. Otherwise retry after twice that.
//! - Vote (master serving slots): at most one per epoch (lastVoteEpoch, persisted), only for a
//!   replica whose master is FAIL (or FORCEACK from a manual failover), not twice for
//!   replicas of the same master within 2 × node timeout, and only when the claimed config
//!   epoch is at least the one of every current owner of the claimed slots.
//! - Manual failover: the replica sends MFSTART; its master pauses client writes and flags
//!   its PINGs as PAUSED with its offset; once the replica has processed exactly that offset
//!   it runs an immediate election whose request carries FORCEACK. 5 s timeout.
//! - Replica migration: a replica of the master with the most working replicas moves to an
//!   orphaned master (serving slots, used to have replicas, none working now) when its own
//!   master keeps more than `cluster-migration-barrier` working replicas; only the replica
//!   with the smallest node ID among those masters' replicas moves, after the master has been
//!   orphaned for 5 s.

use super::bus::{self, Body, Msg};
use super::{NodeId, SlotBitmap, State, FAIL, MIGRATE_TO, MYSELF, NOFAILOVER, PFAIL};

/// Fixed part of the election delay, ms. Redis waits 500 ms for the FAIL to spread; our FAIL
/// is broadcast the moment a majority agrees (and masters are pinged at once on PFAIL), so a
/// shorter wait keeps failover within node timeout + 1 s without racing the FAIL.
pub const ELECTION_DELAY: u64 = 200;
/// Random part of the election delay (0..this), ms: sibling replicas do not collide.
pub const ELECTION_JITTER: u64 = 300;

/// Manual failover timeout (Redis's CLUSTER_MF_TIMEOUT), milliseconds.
pub const MF_TIMEOUT: u64 = 5000;
/// The master pauses writes for this many manual failover timeouts.
pub const MF_PAUSE_MULT: u64 = 2;
/// An orphaned master must stay orphaned this long before a replica migrates to it.
pub const MIGRATION_DELAY: u64 = 5000;
/// A paused master announces its offset as final once it has not moved for this long.
pub const MF_SETTLE_MS: u64 = 100;
/// "Currently unable to failover" is logged again after this many milliseconds.
const CANT_FAILOVER_RELOG_MS: u64 = 10_000;

/// What the failover logic needs from replication.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplView {
    /// My replication offset (processed from my master, or produced as a master).
    pub offset: u64,
    /// Milliseconds since my link to my master went down; None while it is up.
    pub link_down_ms: Option<u64>,
}

/// Why an election is not running (logged once in a while, as Redis does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CantFailover {
    /// Nothing to report.
    #[default]
    None,
    /// My data is too old (cluster-replica-validity-factor).
    DataAge,
    /// Waiting for the election delay.
    WaitingDelay,
    /// The election expired without a majority.
    Expired,
    /// Votes requested, majority not reached yet.
    WaitingVotes,
}

/// How CLUSTER FAILOVER was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManualMode {
    /// Coordinated with the master: pause, catch up, election with FORCEACK.
    Default,
    /// The master is unreachable: election with FORCEACK right away.
    Force,
    /// No election: take a new epoch without consensus and the slots.
    Takeover,
}

/// Election, vote and manual failover state of this node, plus the configuration read from
/// the server config by the cron.
#[derive(Debug, Clone, Default)]
pub struct Failover {
    /// When the current (or last) election starts / started (ms); 0 = never.
    pub auth_time: u64,
    /// Masters that granted their vote in the current election.
    pub auth_voters: Vec<NodeId>,
    /// The vote request of the current election was sent.
    pub auth_sent: bool,
    /// My rank among my master's replicas when the election was scheduled.
    pub auth_rank: usize,
    /// Epoch of the current election.
    pub auth_epoch: u64,
    /// Last reason logged for not failing over.
    pub cant_reason: CantFailover,
    /// When that reason was logged (ms).
    pub cant_logged: u64,
    /// Manual failover deadline (ms); 0 = none in progress.
    pub mf_end: u64,
    /// Replica: the election of the manual failover may start.
    pub mf_can_start: bool,
    /// Master: the replica that asked for the manual failover.
    pub mf_replica: Option<NodeId>,
    /// Master: when writes were paused for the manual failover (ms).
    pub mf_paused_at: u64,
    /// Master: my offset at the last cron tick of the manual failover, and since when it has
    /// not moved (ms).
    pub mf_last_offset: (u64, u64),
    /// Master: the offset announced as final (PAUSED): it has not moved for a while after
    /// the pause, so writes that were already executing when the pause began are in it.
    pub mf_final_offset: Option<u64>,
    /// Replica: my master's offset announced while it was paused.
    pub mf_master_offset: Option<u64>,
    /// Pending request for the bus: pause client writes until this time (ms).
    pub todo_pause_until: Option<u64>,
    /// Pending request for the bus: end the write pause.
    pub todo_unpause: bool,
    /// cluster-replica-no-failover.
    pub no_failover: bool,
    /// replica-priority is 0: never promoted automatically.
    pub priority_zero: bool,
    /// cluster-replica-validity-factor.
    pub validity_factor: u64,
    /// repl-ping-replica-period (seconds).
    pub repl_ping_period: u64,
    /// cluster-migration-barrier.
    pub migration_barrier: usize,
}

impl State {
    /// Number of votes (or masters) that make a majority of the slot-owning masters.
    pub fn quorum(&self) -> usize {
        self.size / 2 + 1
    }

    /// Replicas of `master` that are not FAIL (Redis's clusterCountNonFailingSlaves).
    pub fn working_replicas(&self, master: NodeId) -> usize {
        self.nodes
            .values()
            .filter(|n| n.is_slave() && n.master == Some(master) && !n.failed())
            .count()
    }

    /// Clears the manual failover state; a master that paused its writes for it unpauses.
    pub fn reset_manual_failover(&mut self) {
        if self.fo.mf_replica.is_some() || self.fo.mf_paused_at != 0 {
            self.fo.todo_unpause = true;
            self.fo.todo_pause_until = None;
        }
        self.fo.mf_end = 0;
        self.fo.mf_can_start = false;
        self.fo.mf_replica = None;
        self.fo.mf_paused_at = 0;
        self.fo.mf_last_offset = (0, 0);
        self.fo.mf_final_offset = None;
        self.fo.mf_master_offset = None;
    }

    /// My rank among my master's replicas: how many of them (able to fail over) announce a
    /// larger replication offset than mine.
    pub fn replica_rank(&self, my_offset: u64) -> usize {
        let Some(master) = self.my_master() else {
            return 0;
        };
        self.nodes
            .values()
            .filter(|n| {
                n.id != self.myself
                    && n.is_slave()
                    && n.master == Some(master)
                    && n.flags & NOFAILOVER == 0
                    && n.repl_offset > my_offset
            })
            .count()
    }

    /// Header flag word of my messages: my node flags plus the PAUSED message flag while I
    /// am a master paused for a manual failover whose offset (the header's) is final.
    pub fn my_message_flags(&self) -> u16 {
        let mut f = self.me().flags;
        if self.me().is_master()
            && self.fo.mf_end != 0
            && self.fo.mf_final_offset == Some(self.me().repl_offset)
        {
            f |= bus::MSGFLAG_PAUSED;
        }
        f
    }

    /// Master side of a manual failover, every cron tick: the offset becomes final once it
    /// has stayed the same for [`MF_SETTLE_MS`] since the pause (a write that had passed the
    /// pause check before the pause began may still be executing right after it).
    fn settle_paused_offset(&mut self, now: u64, offset: u64) {
        if self.fo.mf_end == 0 || self.fo.mf_paused_at == 0 || !self.me().is_master() {
            return;
        }
        let (last, since) = self.fo.mf_last_offset;
        if last != offset || since == 0 {
            self.fo.mf_last_offset = (offset, now.max(self.fo.mf_paused_at));
            self.fo.mf_final_offset = None;
        } else if now.saturating_sub(since) >= MF_SETTLE_MS {
            self.fo.mf_final_offset = Some(offset);
        }
    }

    /// Queues `msg` for `to` (None = every node with a link), sent after the next commit.
    fn queue(&mut self, to: Option<NodeId>, typ: u16, msg: Vec<u8>) {
        match to {
            Some(_) => self.stats.sent[typ as usize % bus::MSG_TYPES] += 1,
            None => {
                let links = self
                    .nodes
                    .values()
                    .filter(|n| n.flags & (MYSELF | super::HANDSHAKE) == 0 && n.link.is_some())
                    .count() as u64;
                self.stats.sent[typ as usize % bus::MSG_TYPES] += links;
            }
        }
        self.outbox.push((to, msg));
    }

    /// Broadcasts FAILOVER_AUTH_REQUEST for the current election.
    fn request_failover_auth(&mut self) {
        let hdr = self.my_header(bus::AUTH_REQUEST);
        let body = Body::AuthRequest {
            force_ack: self.fo.mf_end != 0,
            config_epoch: hdr.config_epoch,
            slots: Box::new(hdr.slots.clone()),
        };
        let msg = bus::encode(&Msg { hdr, body });
        self.queue(None, bus::AUTH_REQUEST, msg);
    }

    fn log_cant_failover(&mut self, reason: CantFailover, now: u64) {
        if reason == self.fo.cant_reason
            && now.saturating_sub(self.fo.cant_logged) < CANT_FAILOVER_RELOG_MS
        {
            return;
        }
        self.fo.cant_reason = reason;
        // Nothing is logged while a failover can still happen in a reasonable time.
        let quiet = self.node_timeout.saturating_add(5000);
        if let Some(m) = self.my_master().and_then(|m| self.nodes.get(&m)) {
            if m.failed() && now.saturating_sub(m.fail_time) < quiet {
                return;
            }
        }
        let msg = match reason {
            CantFailover::DataAge => "Disconnected from master for longer than allowed. Please check the 'cluster-replica-validity-factor' configuration option.",
            CantFailover::WaitingDelay => "Waiting the delay before I can start a new failover.",
            CantFailover::Expired => "Failover attempt expired.",
            CantFailover::WaitingVotes => "Waiting for votes, but majority still not reached.",
            CantFailover::None => return,
        };
        self.fo.cant_logged = now;
        self.log
            .push((false, format!("Currently unable to failover: {msg}")));
    }

    /// The replica side of automatic and manual failover (Redis's clusterHandleSlaveFailover).
    pub fn handle_replica_failover(&mut self, now: u64, repl: ReplView) {
        let manual = self.fo.mf_end != 0 && self.fo.mf_can_start;
        let auth_timeout = self.node_timeout.saturating_mul(2).max(2000);
        let auth_retry = auth_timeout.saturating_mul(2);
        let auth_age = now.saturating_sub(self.fo.auth_time);
        let master = match self.my_master().and_then(|m| self.nodes.get(&m)) {
            Some(m) if self.i_am_slave() => m,
            _ => {
                self.fo.cant_reason = CantFailover::None;
                return;
            }
        };
        let never = self.fo.no_failover || self.fo.priority_zero;
        if (!manual && (!master.failed() || never)) || master.slots.is_empty() {
            self.fo.cant_reason = CantFailover::None;
            return;
        }
        // Data age: how long the link has been down, minus the node timeout it took to
        // declare the master failing.
        let mut data_age = repl.link_down_ms.unwrap_or(0);
        if data_age > self.node_timeout {
            data_age -= self.node_timeout;
        }
        if self.fo.validity_factor != 0
            && data_age
                > self
                    .fo
                    .repl_ping_period
                    .saturating_mul(1000)
                    .saturating_add(self.node_timeout.saturating_mul(self.fo.validity_factor))
            && !manual
        {
            self.log_cant_failover(CantFailover::DataAge, now);
            return;
        }
        // Schedule a new election when the previous one is over.
        if self.fo.auth_time == 0 || auth_age > auth_retry {
            use rand::Rng;
            let rank = self.replica_rank(repl.offset);
            self.fo.auth_time = now
                + ELECTION_DELAY
                + rand::thread_rng().gen_range(0..ELECTION_JITTER)
                + rank as u64 * 1000;
            self.fo.auth_voters.clear();
            self.fo.auth_sent = false;
            self.fo.auth_rank = rank;
            if self.fo.mf_end != 0 {
                self.fo.auth_time = now;
                self.fo.auth_rank = 0;
            }
            self.log.push((
                false,
                format!(
                    "Start of election delayed for {} milliseconds (rank #{}, offset {}).",
                    self.fo.auth_time - now,
                    self.fo.auth_rank,
                    repl.offset
                ),
            ));
            // Tell my sibling replicas my offset so that they rank themselves.
            self.broadcast_pong_local_replicas();
            if self.fo.mf_end == 0 {
                return;
            }
        }
        // A sibling may have announced a better offset since: add delay for the new rank.
        if !self.fo.auth_sent && self.fo.mf_end == 0 {
            let rank = self.replica_rank(repl.offset);
            if rank > self.fo.auth_rank {
                let added = (rank - self.fo.auth_rank) as u64 * 1000;
                self.fo.auth_time += added;
                self.fo.auth_rank = rank;
                self.log.push((
                    false,
                    format!(
                        "Replica rank updated to #{rank}, added {added} milliseconds of delay."
                    ),
                ));
            }
        }
        if now < self.fo.auth_time {
            self.log_cant_failover(CantFailover::WaitingDelay, now);
            return;
        }
        if now - self.fo.auth_time > auth_timeout {
            self.log_cant_failover(CantFailover::Expired, now);
            return;
        }
        if !self.fo.auth_sent {
            self.current_epoch += 1;
            self.fo.auth_epoch = self.current_epoch;
            self.log.push((
                false,
                format!(
                    "Starting a failover election for epoch {}.",
                    self.current_epoch
                ),
            ));
            self.request_failover_auth();
            self.fo.auth_sent = true;
            self.todo_save = true;
            return;
        }
        self.check_election_won(now);
    }

    /// Promotes myself when the current election has a majority and is still valid: not
    /// expired, and my master is FAIL or my manual failover is still running (a manual
    /// failover that timed out must not promote me: my master resumed taking writes).
    fn check_election_won(&mut self, now: u64) {
        if !self.fo.auth_sent || !self.i_am_slave() {
            return;
        }
        if self.fo.auth_voters.len() < self.quorum() {
            return;
        }
        let manual = self.fo.mf_end != 0 && self.fo.mf_can_start;
        let master_failed = self
            .my_master()
            .and_then(|m| self.nodes.get(&m))
            .is_some_and(|m| m.failed());
        let auth_timeout = self.node_timeout.saturating_mul(2).max(2000);
        if (!manual && !master_failed) || now.saturating_sub(self.fo.auth_time) > auth_timeout {
            return;
        }
        self.log
            .push((false, "Failover election won: I'm the new master.".into()));
        if self.me().config_epoch < self.fo.auth_epoch {
            let e = self.fo.auth_epoch;
            self.me_mut().config_epoch = e;
            self.log.push((
                false,
                format!("configEpoch set to {e} after successful failover"),
            ));
        }
        self.replace_my_master();
    }

    /// The end of every failover: I become a master, take my master's slots, save, and tell
    /// everybody (Redis's clusterFailoverReplaceYourMaster).
    pub fn replace_my_master(&mut self) {
        let me = self.myself;
        let Some(old) = self.my_master() else {
            return;
        };
        self.set_node_as_master(me);
        let slots: Vec<u16> = self
            .nodes
            .get(&old)
            .map(|n| {
                n.slots
                    .ranges()
                    .into_iter()
                    .flat_map(|(a, b)| a..=b)
                    .collect()
            })
            .unwrap_or_default();
        for s in slots {
            self.add_slot(s, me);
        }
        self.todo_save = true;
        self.todo_broadcast_pong = true;
        self.reset_manual_failover();
    }

    /// Sends a PONG to the other replicas of my master (and to my replicas).
    fn broadcast_pong_local_replicas(&mut self) {
        let me = self.myself;
        let my_master = self.my_master();
        let ids: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| {
                n.link.is_some()
                    && n.flags & (MYSELF | super::HANDSHAKE) == 0
                    && n.is_slave()
                    && n.master.is_some()
                    && (n.master == Some(me) || n.master == my_master)
            })
            .map(|n| n.id)
            .collect();
        for id in ids {
            let m = self.build_ping(bus::PONG, Some(id));
            self.outbox.push((Some(id), m));
        }
    }

    /// A FAILOVER_AUTH_REQUEST from `sender` (Redis's clusterSendFailoverAuthIfNeeded).
    pub fn handle_auth_request(
        &mut self,
        sender: NodeId,
        req_current_epoch: u64,
        req_config_epoch: u64,
        claimed: &SlotBitmap,
        force_ack: bool,
        now: u64,
    ) {
        // Only masters serving slots vote: they make the cluster size.
        if self.i_am_slave() || self.me().slots.is_empty() {
            return;
        }
        if req_current_epoch < self.current_epoch {
            self.log.push((
                true,
                format!(
                    "Failover auth denied to {sender}: reqEpoch ({req_current_epoch}) < curEpoch({})",
                    self.current_epoch
                ),
            ));
            return;
        }
        if self.last_vote_epoch == self.current_epoch {
            self.log.push((
                true,
                format!(
                    "Failover auth denied to {sender}: already voted for epoch {}",
                    self.current_epoch
                ),
            ));
            return;
        }
        let Some(node) = self.nodes.get(&sender) else {
            return;
        };
        let master = node.master.and_then(|m| self.nodes.get(&m));
        let denied = if node.is_master() {
            Some("it is a master node")
        } else {
            match master {
                None => Some("I don't know its master"),
                Some(m) if !m.failed() && !force_ack => Some("its master is up"),
                _ => None,
            }
        };
        if let Some(why) = denied {
            self.log
                .push((true, format!("Failover auth denied to {sender}: {why}")));
            return;
        }
        let Some(master) = master else {
            return;
        };
        let master_id = master.id;
        let since_vote = now.saturating_sub(master.voted_time);
        if master.voted_time != 0 && since_vote < self.node_timeout.saturating_mul(2) {
            self.log.push((
                true,
                format!(
                    "Failover auth denied to {sender}: can't vote about this master before {} milliseconds",
                    self.node_timeout.saturating_mul(2) - since_vote
                ),
            ));
            return;
        }
        // The claimed slots must not be served with a newer config than the claim.
        for (a, b) in claimed.ranges() {
            for s in a..=b {
                let Some(owner) = self.slots[s as usize].and_then(|o| self.nodes.get(&o)) else {
                    continue;
                };
                if owner.config_epoch <= req_config_epoch {
                    continue;
                }
                self.log.push((
                    true,
                    format!(
                        "Failover auth denied to {sender}: slot {s} epoch ({}) > reqEpoch ({req_config_epoch})",
                        owner.config_epoch
                    ),
                ));
                return;
            }
        }
        self.last_vote_epoch = self.current_epoch;
        if let Some(m) = self.nodes.get_mut(&master_id) {
            m.voted_time = now;
        }
        self.todo_save = true;
        let msg = bus::encode(&Msg {
            hdr: self.my_header(bus::AUTH_ACK),
            body: Body::Empty,
        });
        self.queue(Some(sender), bus::AUTH_ACK, msg);
        self.log.push((
            false,
            format!(
                "Failover auth granted to {sender} for epoch {}",
                self.current_epoch
            ),
        ));
    }

    /// A FAILOVER_AUTH_ACK from `sender`: a vote, if it is a master serving slots and voted
    /// in my current election.
    pub fn handle_auth_ack(&mut self, sender: NodeId, sender_current_epoch: u64, now: u64) {
        let Some(n) = self.nodes.get(&sender) else {
            return;
        };
        if n.is_master()
            && !n.slots.is_empty()
            && sender_current_epoch >= self.fo.auth_epoch
            && !self.fo.auth_voters.contains(&sender)
        {
            self.fo.auth_voters.push(sender);
            self.check_election_won(now);
        }
    }

    /// MFSTART from `sender`: one of my replicas asks for a manual failover; pause writes.
    pub fn handle_mfstart(&mut self, sender: NodeId, now: u64) {
        let mine = self
            .nodes
            .get(&sender)
            .is_some_and(|n| n.is_slave() && n.master == Some(self.myself));
        if !mine || !self.me().is_master() {
            return;
        }
        self.reset_manual_failover();
        self.fo.todo_unpause = false;
        self.fo.mf_end = now + MF_TIMEOUT;
        self.fo.mf_replica = Some(sender);
        self.fo.mf_paused_at = now;
        self.fo.todo_pause_until = Some(now + MF_TIMEOUT * MF_PAUSE_MULT);
        self.log.push((
            false,
            format!("Manual failover requested by replica {sender}."),
        ));
    }

    /// A message from my master flagged PAUSED during my manual failover: remember its offset.
    pub fn note_paused_master_offset(&mut self, offset: u64) {
        if self.fo.mf_end == 0 || !self.i_am_slave() {
            return;
        }
        if self.fo.mf_master_offset.is_none() {
            self.log.push((
                false,
                format!("Received replication offset for paused master manual failover: {offset}"),
            ));
        }
        // The latest one: a write that was already executing when the pause began shows up
        // in the next PING.
        self.fo.mf_master_offset = Some(offset);
    }

    /// CLUSTER FAILOVER on this node. Errors are the reply texts.
    pub fn manual_failover(&mut self, mode: ManualMode, now: u64) -> Result<(), &'static str> {
        if self.me().is_master() {
            return Err("ERR You should send CLUSTER FAILOVER to a replica");
        }
        let Some(master) = self.my_master().and_then(|m| self.nodes.get(&m)) else {
            return Err("ERR I'm a replica but my master is unknown to me");
        };
        if mode == ManualMode::Default && (master.failed() || !master.link_up) {
            return Err("ERR Master is down or failed, please use CLUSTER FAILOVER FORCE");
        }
        let master_id = master.id;
        self.reset_manual_failover();
        self.fo.mf_end = now + MF_TIMEOUT;
        match mode {
            ManualMode::Takeover => {
                self.log
                    .push((true, "Taking over the master (user request).".into()));
                self.bump_epoch_without_consensus();
                self.replace_my_master();
            }
            ManualMode::Force => {
                self.log
                    .push((true, "Forced failover user request accepted.".into()));
                self.fo.mf_can_start = true;
                // A new election right away, whatever the previous attempt did.
                self.fo.auth_time = 0;
            }
            ManualMode::Default => {
                self.log
                    .push((true, "Manual failover user request accepted.".into()));
                self.fo.auth_time = 0;
                let msg = bus::encode(&Msg {
                    hdr: self.my_header(bus::MFSTART),
                    body: Body::Empty,
                });
                self.queue(Some(master_id), bus::MFSTART, msg);
            }
        }
        Ok(())
    }

    /// Replica side of a manual failover: start once my offset reached my paused master's.
    fn handle_manual_failover(&mut self, repl: ReplView) {
        if self.fo.mf_end == 0 || self.fo.mf_can_start {
            return;
        }
        if self.fo.mf_master_offset == Some(repl.offset) {
            self.fo.mf_can_start = true;
            self.log.push((
                false,
                "All master replication stream processed, manual failover can start.".into(),
            ));
        }
    }

    /// Replica migration (Redis's clusterHandleSlaveMigration), called by the cron on replicas.
    fn handle_replica_migration(&mut self, now: u64) {
        let me = self.myself;
        // Orphaned masters, the largest number of working replicas of a master, mine.
        let mut orphaned = 0;
        let mut max_replicas = 0;
        let mut mine = 0;
        let my_master = self.my_master();
        let masters: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| n.is_master() && n.flags & (MYSELF | super::HANDSHAKE) == 0)
            .map(|n| n.id)
            .collect();
        let mut counts: Vec<(NodeId, usize)> = Vec::with_capacity(masters.len());
        for id in &masters {
            let ok = self.working_replicas(*id);
            counts.push((*id, ok));
            let Some(n) = self.nodes.get(id) else {
                continue;
            };
            if n.failed() {
                continue;
            }
            if ok == 0 && !n.slots.is_empty() && n.flags & MIGRATE_TO != 0 {
                orphaned += 1;
            }
            max_replicas = max_replicas.max(ok);
            if my_master == Some(*id) {
                mine = ok;
            }
        }
        // Track for how long each master has been orphaned.
        let mut target: Option<NodeId> = None;
        let mut candidate = me;
        for (id, ok) in &counts {
            let Some(n) = self.nodes.get(id) else {
                continue;
            };
            let is_orphaned = !n.failed() && n.flags & MIGRATE_TO != 0 && *ok == 0;
            let has_slots = !n.slots.is_empty();
            if *ok == max_replicas && max_replicas > 0 {
                for r in self.replicas_of(*id) {
                    if r < candidate {
                        candidate = r;
                    }
                }
            }
            if let Some(n) = self.nodes.get_mut(id) {
                if is_orphaned {
                    if n.orphaned_time == 0 {
                        n.orphaned_time = now;
                    }
                    if has_slots && target.is_none_or(|t| *id < t) {
                        target = Some(*id);
                    }
                } else {
                    n.orphaned_time = 0;
                }
            }
        }
        if orphaned == 0
            || max_replicas < 2
            || mine != max_replicas
            || !self.allow_replica_migration
        {
            return;
        }
        if !self.ok {
            return;
        }
        let Some(mm) = my_master else {
            return;
        };
        // My master must keep more than the barrier of working (not even PFAIL) replicas.
        let ok_strict = self
            .nodes
            .values()
            .filter(|n| n.is_slave() && n.master == Some(mm) && n.flags & (FAIL | PFAIL) == 0)
            .count();
        if ok_strict <= self.fo.migration_barrier {
            return;
        }
        let Some(t) = target else {
            return;
        };
        let since = self
            .nodes
            .get(&t)
            .map(|n| now.saturating_sub(n.orphaned_time))
            .unwrap_or(0);
        if candidate == me && since > MIGRATION_DELAY {
            self.log
                .push((false, format!("Migrating to orphaned master {t}")));
            self.set_my_master(t);
            self.todo_save = true;
            self.todo_broadcast_pong = true;
        }
    }

    /// The failover part of the cluster cron (every 100 ms).
    pub fn failover_cron(&mut self, now: u64, repl: ReplView) {
        // Replicas announce NOFAILOVER so that siblings rank themselves without them.
        let nofailover = self.fo.no_failover;
        {
            let me = self.me_mut();
            let before = me.flags;
            if nofailover {
                me.flags |= NOFAILOVER;
            } else {
                me.flags &= !NOFAILOVER;
            }
            if me.flags != before {
                self.todo_save = true;
            }
        }
        // Masters that have replicas are valid replica migration targets later.
        let with_replicas: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| n.is_slave())
            .filter_map(|n| n.master)
            .collect();
        for m in with_replicas {
            if let Some(n) = self.nodes.get_mut(&m) {
                if n.is_master() {
                    n.flags |= MIGRATE_TO;
                }
            }
        }
        if self.fo.mf_end != 0 && self.fo.mf_end < now {
            self.log.push((true, "Manual failover timed out.".into()));
            self.reset_manual_failover();
        }
        // A paused master pings the replica taking over on every tick with its offset.
        self.settle_paused_offset(now, repl.offset);
        if self.fo.mf_end != 0 && self.me().is_master() {
            if let Some(r) = self.fo.mf_replica {
                self.send_ping(r, bus::PING, now);
            }
        }
        if self.i_am_slave() {
            self.handle_manual_failover(repl);
            self.handle_replica_failover(now, repl);
            // A manual failover schedules and starts its election in the same tick.
            if self.fo.mf_can_start && !self.fo.auth_sent && self.i_am_slave() {
                self.handle_replica_failover(now, repl);
            }
            if self.i_am_slave() {
                self.handle_replica_migration(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Node, MASTER, SLAVE, SLOT_COUNT};
    use super::*;

    /// A cluster of 3 masters (each with a third of the slots) and one replica per master,
    /// seen from node `view` (index: 0..3 masters, 3..6 replicas of masters 0..3).
    fn cluster(view: usize) -> (State, Vec<NodeId>) {
        let mut ids: Vec<NodeId> = (0..6).map(|_| NodeId::random()).collect();
        ids.sort();
        let mut st = State::new(0);
        st.nodes.clear();
        st.myself = ids[view];
        st.node_timeout = 1000;
        for (i, id) in ids.iter().enumerate() {
            let mut flags = if i < 3 { MASTER } else { SLAVE };
            if i == view {
                flags |= MYSELF;
            }
            let mut n = Node::new(*id, flags, 0);
            n.ip = "127.0.0.1".into();
            n.port = 7000 + i as u16;
            n.cport = 17000 + i as u16;
            n.config_epoch = if i < 3 { i as u64 + 1 } else { 0 };
            if i >= 3 {
                n.master = Some(ids[i - 3]);
            }
            st.nodes.insert(*id, n);
        }
        for s in 0..SLOT_COUNT as u16 {
            let owner = ids[(s as usize * 3) / SLOT_COUNT];
            st.add_slot(s, owner);
        }
        st.current_epoch = 3;
        st.update_state(100_000);
        st.update_state(200_000);
        (st, ids)
    }

    fn fail(st: &mut State, id: NodeId, now: u64) {
        if let Some(n) = st.nodes.get_mut(&id) {
            n.flags |= FAIL;
            n.fail_time = now;
        }
    }

    #[test]
    fn master_votes_once_per_epoch_and_only_for_failed_masters() {
        let (mut st, ids) = cluster(1);
        let replica = ids[3];
        let claimed = st.nodes[&ids[0]].slots.clone();
        // Master 0 is up: no vote.
        st.current_epoch = 4;
        st.handle_auth_request(replica, 4, 1, &claimed, false, 10_000);
        assert!(st.outbox.is_empty());
        assert_eq!(st.last_vote_epoch, 0);
        // FORCEACK (manual failover) overrides that.
        st.handle_auth_request(replica, 4, 1, &claimed, true, 10_000);
        assert_eq!(st.outbox.len(), 1);
        assert_eq!(st.last_vote_epoch, 4);
        assert!(st.todo_save);
        assert_eq!(st.stats.sent[bus::AUTH_ACK as usize], 1);
        // Same epoch again: already voted.
        st.outbox.clear();
        fail(&mut st, ids[0], 10_000);
        st.handle_auth_request(replica, 4, 1, &claimed, false, 10_100);
        assert!(st.outbox.is_empty());
        // Next epoch, but a replica of the same master within 2 × node timeout: refused.
        st.current_epoch = 5;
        st.handle_auth_request(replica, 5, 1, &claimed, false, 11_000);
        assert!(st.outbox.is_empty());
        // After 2 × node timeout: granted.
        st.handle_auth_request(replica, 5, 1, &claimed, false, 12_100);
        assert_eq!(st.outbox.len(), 1);
        assert_eq!(st.last_vote_epoch, 5);
    }

    #[test]
    fn vote_refused_for_stale_claims_old_epochs_and_non_voters() {
        let (mut st, ids) = cluster(1);
        let replica = ids[3];
        fail(&mut st, ids[0], 1000);
        let claimed = st.nodes[&ids[0]].slots.clone();
        st.current_epoch = 7;
        // Request from an older epoch.
        st.handle_auth_request(replica, 6, 1, &claimed, false, 5000);
        assert!(st.outbox.is_empty());
        // Claimed slots are served with a newer config epoch than the claim.
        if let Some(n) = st.nodes.get_mut(&ids[0]) {
            n.config_epoch = 6;
        }
        st.handle_auth_request(replica, 7, 1, &claimed, false, 5000);
        assert!(st.outbox.is_empty());
        // Requests from a master are refused.
        st.handle_auth_request(ids[2], 7, 6, &claimed, false, 5000);
        assert!(st.outbox.is_empty());
        st.handle_auth_request(replica, 7, 6, &claimed, false, 5000);
        assert_eq!(st.outbox.len(), 1);
        // A replica (not serving slots) never votes.
        let (mut r, ids) = cluster(4);
        fail(&mut r, ids[0], 1000);
        let claimed = r.nodes[&ids[0]].slots.clone();
        r.current_epoch = 7;
        r.handle_auth_request(ids[3], 7, 1, &claimed, false, 5000);
        assert!(r.outbox.is_empty());
    }

    #[test]
    fn election_waits_its_delay_then_wins_with_a_majority() {
        let (mut st, ids) = cluster(3);
        let repl = ReplView {
            offset: 100,
            link_down_ms: Some(1500),
        };
        // Master up: nothing.
        st.failover_cron(10_000, repl);
        assert_eq!(st.fo.auth_time, 0);
        fail(&mut st, ids[0], 10_000);
        st.failover_cron(10_000, repl);
        let t = st.fo.auth_time;
        assert!(
            (10_000 + ELECTION_DELAY..10_000 + ELECTION_DELAY + ELECTION_JITTER).contains(&t),
            "{t}"
        );
        assert!(!st.fo.auth_sent);
        st.failover_cron(10_000 + ELECTION_DELAY - 50, repl);
        assert!(!st.fo.auth_sent);
        st.outbox.clear();
        st.failover_cron(t, repl);
        assert!(st.fo.auth_sent);
        assert_eq!(st.current_epoch, 4);
        assert_eq!(st.fo.auth_epoch, 4);
        assert_eq!(st.outbox.len(), 1);
        let req = bus::decode(&st.outbox[0].1).unwrap();
        match req.body {
            Body::AuthRequest {
                force_ack,
                config_epoch,
                slots,
            } => {
                assert!(!force_ack);
                assert_eq!(config_epoch, 1);
                assert_eq!(*slots, st.nodes[&ids[0]].slots);
            }
            b => panic!("{b:?}"),
        }
        // Votes: a replica's or an old epoch's vote does not count; two masters make 2 of 3.
        st.handle_auth_ack(ids[4], 4, t + 10);
        st.handle_auth_ack(ids[1], 3, t + 10);
        st.handle_auth_ack(ids[1], 4, t + 10);
        st.handle_auth_ack(ids[1], 4, t + 10);
        assert!(st.i_am_slave());
        // Too late: the election expired (2 s).
        let mut late = st.clone_for_test();
        late.handle_auth_ack(ids[2], 4, t + 2001);
        assert!(late.i_am_slave());
        st.handle_auth_ack(ids[2], 4, t + 20);
        assert!(st.me().is_master());
        assert_eq!(st.me().config_epoch, 4);
        assert_eq!(st.slots[0], Some(ids[3]));
        assert_eq!(st.me().slots.count(), st.nodes[&ids[3]].slots.count());
        assert!(st.nodes[&ids[0]].slots.is_empty());
        assert!(st.todo_broadcast_pong && st.todo_save);
        assert_eq!(st.desired_upstream(), Some(None));
    }

    #[test]
    fn election_expires_and_retries_later() {
        let (mut st, ids) = cluster(3);
        let repl = ReplView::default();
        fail(&mut st, ids[0], 0);
        st.failover_cron(10_000, repl);
        let t = st.fo.auth_time;
        st.failover_cron(t, repl);
        assert!(st.fo.auth_sent);
        // Timeout max(2 × 1000, 2000) = 2000: expired, no new request before the retry time.
        st.failover_cron(t + 2500, repl);
        assert_eq!(st.current_epoch, 4);
        st.failover_cron(t + 4001, repl);
        assert!(!st.fo.auth_sent);
        assert!(st.fo.auth_time > t + 4001);
        let t2 = st.fo.auth_time;
        st.failover_cron(t2, repl);
        assert_eq!(st.current_epoch, 5);
    }

    #[test]
    fn rank_delays_the_less_updated_replica_and_config_blocks_failover() {
        let (mut st, ids) = cluster(3);
        // A second replica of master 0 with a better offset.
        let other = NodeId::random();
        let mut n = Node::new(other, SLAVE, 0);
        n.master = Some(ids[0]);
        n.repl_offset = 500;
        st.nodes.insert(other, n);
        assert_eq!(st.replica_rank(100), 1);
        assert_eq!(st.replica_rank(500), 0);
        fail(&mut st, ids[0], 0);
        st.failover_cron(
            10_000,
            ReplView {
                offset: 100,
                link_down_ms: None,
            },
        );
        assert!(st.fo.auth_time >= 11_000 + ELECTION_DELAY);
        // A NOFAILOVER sibling does not count.
        if let Some(n) = st.nodes.get_mut(&other) {
            n.flags |= NOFAILOVER;
        }
        assert_eq!(st.replica_rank(100), 0);
        // cluster-replica-no-failover / replica-priority 0: no election.
        let (mut st, ids) = cluster(3);
        fail(&mut st, ids[0], 0);
        st.fo.no_failover = true;
        st.failover_cron(10_000, ReplView::default());
        assert_eq!(st.fo.auth_time, 0);
        assert!(st.me().flags & NOFAILOVER != 0);
        st.fo.no_failover = false;
        st.fo.priority_zero = true;
        st.failover_cron(10_000, ReplView::default());
        assert_eq!(st.fo.auth_time, 0);
        // Data too old: down 100 s with factor 10, timeout 1 s, ping period 10 s.
        st.fo.priority_zero = false;
        st.fo.validity_factor = 10;
        st.fo.repl_ping_period = 10;
        st.failover_cron(
            10_000,
            ReplView {
                offset: 0,
                link_down_ms: Some(100_000),
            },
        );
        assert_eq!(st.fo.auth_time, 0);
        st.fo.validity_factor = 0;
        st.failover_cron(
            10_000,
            ReplView {
                offset: 0,
                link_down_ms: Some(100_000),
            },
        );
        assert!(st.fo.auth_time != 0);
    }

    #[test]
    fn manual_failover_flow() {
        // Replica side.
        let (mut r, ids) = cluster(3);
        assert_eq!(
            r.clone_master_err(ManualMode::Default),
            Err("ERR Master is down or failed, please use CLUSTER FAILOVER FORCE")
        );
        if let Some(n) = r.nodes.get_mut(&ids[0]) {
            let (tx, _rx) = tokio::sync::mpsc::channel(8);
            n.link = Some(tx);
            n.link_up = true;
        }
        r.manual_failover(ManualMode::Default, 1000).unwrap();
        assert_eq!(r.fo.mf_end, 1000 + MF_TIMEOUT);
        assert_eq!(r.outbox.len(), 1);
        assert_eq!(r.stats.sent[bus::MFSTART as usize], 1);
        // Not caught up yet: nothing happens.
        let repl = ReplView {
            offset: 90,
            link_down_ms: None,
        };
        r.failover_cron(1100, repl);
        assert!(!r.fo.auth_sent);
        r.note_paused_master_offset(100);
        r.failover_cron(1200, repl);
        assert!(!r.fo.mf_can_start);
        let repl = ReplView {
            offset: 100,
            link_down_ms: None,
        };
        r.outbox.clear();
        r.failover_cron(1300, repl);
        assert!(r.fo.mf_can_start);
        assert!(r.fo.auth_sent, "a manual failover elects without delay");
        let req = r
            .outbox
            .iter()
            .filter_map(|(_, m)| bus::decode(m).ok())
            .find(|m| m.hdr.typ == bus::AUTH_REQUEST)
            .expect("request");
        assert!(matches!(
            req.body,
            Body::AuthRequest {
                force_ack: true,
                ..
            }
        ));
        // Timeout.
        r.failover_cron(1000 + MF_TIMEOUT + 1, repl);
        assert_eq!(r.fo.mf_end, 0);

        // Master side: MFSTART pauses, PINGs carry PAUSED after the pause settled, timeout
        // unpauses.
        let (mut m, ids) = cluster(0);
        m.handle_mfstart(ids[4], 1000);
        assert_eq!(m.fo.mf_end, 0, "only from my own replicas");
        m.handle_mfstart(ids[3], 1000);
        assert_eq!(
            m.fo.todo_pause_until,
            Some(1000 + MF_TIMEOUT * MF_PAUSE_MULT)
        );
        let at = |offset: u64| ReplView {
            offset,
            link_down_ms: None,
        };
        let paused = |m: &mut State, offset: u64| {
            m.me_mut().repl_offset = offset;
            m.my_message_flags() & bus::MSGFLAG_PAUSED != 0
        };
        m.failover_cron(1050, at(10));
        assert!(!paused(&mut m, 10));
        // A write that was executing when the pause began: the offset moves, settle again.
        m.failover_cron(1120, at(20));
        assert!(!paused(&mut m, 20));
        m.failover_cron(1200, at(20));
        assert!(!paused(&mut m, 20));
        m.failover_cron(1220, at(20));
        assert!(paused(&mut m, 20));
        // The header offset must be the final one.
        assert!(!paused(&mut m, 21));
        m.failover_cron(1000 + MF_TIMEOUT + 1, at(20));
        assert!(m.fo.todo_unpause);
        assert!(!paused(&mut m, 20));
        // Becoming a replica also ends it.
        m.fo.todo_unpause = false;
        m.handle_mfstart(ids[3], 8000);
        m.set_my_master(ids[3]);
        assert!(m.fo.todo_unpause);
        assert_eq!(m.fo.mf_end, 0);
    }

    #[test]
    fn takeover_and_errors() {
        let (mut m, _) = cluster(0);
        assert_eq!(
            m.manual_failover(ManualMode::Force, 0),
            Err("ERR You should send CLUSTER FAILOVER to a replica")
        );
        let (mut r, ids) = cluster(3);
        r.manual_failover(ManualMode::Takeover, 0).unwrap();
        assert!(r.me().is_master());
        assert!(r.me().config_epoch > 3);
        assert_eq!(r.slots[0], Some(ids[3]));
        // FORCE: election at once with FORCEACK even though the master is up.
        let (mut r, _) = cluster(3);
        r.manual_failover(ManualMode::Force, 1000).unwrap();
        r.failover_cron(1000, ReplView::default());
        assert!(r.fo.auth_sent);
    }

    #[test]
    fn replica_migration_to_orphaned_master() {
        // Master 0 has replicas 3 and an extra one; master 1's replica (4) failed.
        let (mut st, ids) = cluster(3);
        let extra = NodeId([b'f'; 40]);
        let mut n = Node::new(extra, SLAVE, 0);
        n.master = Some(ids[0]);
        st.nodes.insert(extra, n);
        fail(&mut st, ids[4], 0);
        st.fo.migration_barrier = 1;
        st.failover_cron(1000, ReplView::default());
        assert_eq!(st.my_master(), Some(ids[0]));
        assert!(st.nodes[&ids[1]].orphaned_time == 1000);
        // After the delay, the smallest ID among the donor's replicas migrates.
        st.failover_cron(1000 + MIGRATION_DELAY + 1, ReplView::default());
        assert!(ids[3] < extra);
        assert_eq!(st.my_master(), Some(ids[1]));
        // The barrier is respected.
        let (mut st, ids) = cluster(3);
        let mut n = Node::new(extra, SLAVE, 0);
        n.master = Some(ids[0]);
        st.nodes.insert(extra, n);
        fail(&mut st, ids[4], 0);
        st.fo.migration_barrier = 2;
        st.failover_cron(1000, ReplView::default());
        st.failover_cron(1000 + MIGRATION_DELAY + 1, ReplView::default());
        assert_eq!(st.my_master(), Some(ids[0]));
        // cluster-allow-replica-migration no.
        st.fo.migration_barrier = 1;
        st.allow_replica_migration = false;
        st.failover_cron(20_000, ReplView::default());
        assert_eq!(st.my_master(), Some(ids[0]));
    }

    impl State {
        fn clone_master_err(&mut self, mode: ManualMode) -> Result<(), &'static str> {
            self.manual_failover(mode, 0)
        }

        /// A copy of the parts of the state the election logic reads.
        fn clone_for_test(&self) -> State {
            let mut st = State::new(0);
            st.myself = self.myself;
            st.nodes = self.nodes.clone();
            st.slots = self.slots.clone();
            st.current_epoch = self.current_epoch;
            st.size = self.size;
            st.ok = self.ok;
            st.node_timeout = self.node_timeout;
            st.fo = self.fo.clone();
            st
        }
    }
}
