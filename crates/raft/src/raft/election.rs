//! Elections: pre-vote (thesis §9.6), votes (§5.2, §5.4.1), and the leader's check that it
//! still hears from a majority (thesis §6.2).

use super::{Raft, RaftFault, Role};
use crate::message::{Message, MessageBody};
use crate::progress::Progress;
use crate::types::{LogIndex, NodeId, Term};

impl Raft {
    /// Thesis §9.6: ask for pre-votes for term + 1 without changing our own term.
    pub(super) fn pre_campaign(&mut self) {
        self.role = Role::PreCandidate;
        self.leader_id = None;
        self.votes.clear();
        self.votes.insert(self.config.id, true);
        self.reset_election_timer();
        if self.votes.len() >= self.quorum() {
            if self.config.fault != RaftFault::PreVoteNeverElects {
                self.campaign();
            }
            return;
        }
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        let term = Term(self.term.0 + 1);
        for to in self.others() {
            self.msgs.push(Message {
                from: self.config.id,
                to,
                term,
                body: MessageBody::PreVote {
                    last_log_index,
                    last_log_term,
                },
            });
        }
    }

    /// §5.2: a follower that hears nothing for an election timeout starts an election.
    pub(super) fn campaign(&mut self) {
        self.term = Term(self.term.0 + 1);
        self.vote = Some(self.config.id);
        self.role = Role::Candidate;
        self.leader_id = None;
        self.votes.clear();
        self.votes.insert(self.config.id, true);
        self.reset_election_timer();
        if self.votes.len() >= self.quorum() {
            self.become_leader();
            return;
        }
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        for to in self.others() {
            self.send(
                to,
                MessageBody::RequestVote {
                    last_log_index,
                    last_log_term,
                },
            );
        }
    }

    /// Whether a majority (this node included) was heard from since the last check; resets
    /// the marks for the next period.
    pub(super) fn quorum_active(&mut self) -> bool {
        let mut active = 1;
        for pr in self.progress.values_mut() {
            if std::mem::replace(&mut pr.recent_active, false) {
                active += 1;
            }
        }
        active >= self.quorum()
    }

    pub(super) fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader_id = Some(self.config.id);
        self.commit_at_election = self.log.committed();
        self.votes.clear();
        let next = self.log.last_index().next();
        self.progress = self
            .others()
            .into_iter()
            .map(|id| (id, Progress::new(next)))
            .collect();
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        if self.config.noop_on_election {
            // Thesis §6.4: an entry of the new term, so that everything before it commits now
            // rather than with the next client request. The first probes carry it.
            self.log.append(self.term, Vec::new());
            self.maybe_commit();
        }
        // §5.2: announce leadership at once; the probes double as heartbeats.
        self.broadcast_heartbeat();
    }

    pub(super) fn step_pre_vote(&mut self, msg: Message) {
        match msg.body {
            MessageBody::PreVote {
                last_log_index,
                last_log_term,
            } => {
                // Refuse while we still hear from a leader (its lease), so a node that merely
                // lost touch with the leader cannot depose it.
                let granted = msg.term > self.term
                    && !self.in_lease()
                    && self.log_ok_for_vote(last_log_index, last_log_term);
                let term = if granted { msg.term } else { self.term };
                self.msgs.push(Message {
                    from: self.config.id,
                    to: msg.from,
                    term,
                    body: MessageBody::PreVoteResponse {
                        vote_granted: granted,
                    },
                });
            }
            MessageBody::PreVoteResponse { vote_granted: true } => {
                if self.role == Role::PreCandidate && msg.term == Term(self.term.0 + 1) {
                    self.tally(msg.from, true);
                }
            }
            _ => unreachable!("not a pre-vote message"),
        }
    }

    /// §5.2, §5.4.1: grant at most one vote per term, and only to a candidate whose log is at
    /// least as up to date as ours.
    pub(super) fn handle_request_vote(
        &mut self,
        from: NodeId,
        last_log_index: LogIndex,
        last_log_term: Term,
    ) {
        let can_vote = self.vote.is_none_or(|v| v == from);
        let granted = can_vote && self.log_ok_for_vote(last_log_index, last_log_term);
        if granted {
            self.vote = Some(from);
            // Figure 2: granting a vote resets the election timer.
            self.reset_election_timer();
        }
        self.send(
            from,
            MessageBody::RequestVoteResponse {
                vote_granted: granted,
            },
        );
    }

    /// §5.4.1: whether a candidate's log is at least as up to date as ours.
    fn log_ok_for_vote(&self, last_log_index: LogIndex, last_log_term: Term) -> bool {
        self.config.fault == RaftFault::VoteWithoutLogCheck
            || self.log.is_up_to_date(last_log_index, last_log_term)
    }

    pub(super) fn handle_vote_response(&mut self, from: NodeId, granted: bool) {
        if self.role == Role::Candidate {
            self.tally(from, granted);
        }
    }

    /// Counts a (pre-)vote; a majority moves a pre-candidate to candidate and a candidate to
    /// leader, a majority of refusals ends the attempt.
    pub(super) fn tally(&mut self, from: NodeId, granted: bool) {
        self.votes.insert(from, granted);
        let yes = self.votes.values().filter(|&&g| g).count();
        let no = self.votes.len() - yes;
        if yes >= self.quorum() {
            match self.role {
                Role::PreCandidate if self.config.fault == RaftFault::PreVoteNeverElects => {}
                Role::PreCandidate => self.campaign(),
                Role::Candidate => self.become_leader(),
                _ => {}
            }
        } else if no >= self.quorum() {
            // Lost this election; wait for the timer (or a leader) as a follower.
            self.become_follower(self.term, None);
        }
    }
}
