//! The coordinator's check of operator requests: who signed, whether the key may, and whether
//! the request was seen before.

use super::{MAX_CLOCK_SKEW_SECS, Operator, OperatorGrant, RequestAuth, Scope};
use crate::keys::PublicKey;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet};

/// The most request nonces remembered at once. Every accepted request is remembered until its
/// time is past the clock skew, so this is the rate the coordinator takes over ten minutes: 166
/// requests a second.
pub const MAX_REMEMBERED_NONCES: usize = 100_000;

/// A request's identity in the replay memory: the key's bytes and the nonce.
type RequestId = ([u8; 32], [u8; 16]);

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefusalKind {
    /// No `Authorization` header.
    Unsigned,
    /// An `Authorization` header that does not parse.
    Malformed,
    /// Signed by a key the trust document does not name as an operator.
    UnknownKey,
    /// Signed at a time too far from the coordinator's clock.
    Expired,
    /// The signature does not cover this request.
    BadSignature,
    /// The same signed request was received before.
    Replayed,
    /// The key lacks the scope the request needs.
    OutOfScope,
    /// The replay memory is full.
    Busy,
}

impl RefusalKind {
    /// Every kind, in the order of [`GateCounts::refused`].
    pub const ALL: [RefusalKind; 8] = [
        RefusalKind::Unsigned,
        RefusalKind::Malformed,
        RefusalKind::UnknownKey,
        RefusalKind::Expired,
        RefusalKind::BadSignature,
        RefusalKind::Replayed,
        RefusalKind::OutOfScope,
        RefusalKind::Busy,
    ];

    /// The HTTP status that answers it: 401 when the caller is not known to be an operator,
    /// 403 when it is but may not do this, 429 when the coordinator is too busy to tell.
    pub fn http_status(&self) -> u16 {
        match self {
            RefusalKind::OutOfScope => 403,
            RefusalKind::Busy => 429,
            _ => 401,
        }
    }

    /// A short name, for metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            RefusalKind::Unsigned => "unsigned",
            RefusalKind::Malformed => "malformed",
            RefusalKind::UnknownKey => "unknown_key",
            RefusalKind::Expired => "expired",
            RefusalKind::BadSignature => "bad_signature",
            RefusalKind::Replayed => "replayed",
            RefusalKind::OutOfScope => "out_of_scope",
            RefusalKind::Busy => "busy",
        }
    }

    fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|k| *k == self)
            .expect("every kind is in ALL")
    }
}

/// A refused request: why, by which operator key if one is named in the trust document, and a
/// message for the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub kind: RefusalKind,
    /// The key that signed it, if the trust document names it.
    pub key: Option<PublicKey>,
    /// What was wrong and what to do.
    pub message: String,
}

/// How many requests the gate took and refused, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GateCounts {
    /// Requests accepted.
    pub accepted: u64,
    /// Requests refused, indexed like [`RefusalKind::ALL`].
    pub refused: [u64; 8],
}

/// Checks signed operator requests against the trust document's operator keys.
///
/// Call [`Gate::check`] for each request that [`super::required_scope`] does not leave open,
/// with the request's method, path and query as sent, its body, its `Authorization` header and
/// the time now.
#[derive(Debug)]
pub struct Gate {
    grants: BTreeMap<PublicKey, Vec<Scope>>,
    seen: HashSet<RequestId>,
    /// When each remembered request may be forgotten (Unix seconds), soonest first.
    forget: BinaryHeap<Reverse<(u64, RequestId)>>,
    counts: GateCounts,
}

impl Gate {
    /// A gate for the operator keys the trust document names.
    pub fn new(grants: &[OperatorGrant]) -> Self {
        Self {
            grants: grants.iter().map(|g| (g.key, g.scopes.clone())).collect(),
            seen: HashSet::new(),
            forget: BinaryHeap::new(),
            counts: GateCounts::default(),
        }
    }

    /// Checks one request that needs `scope`.
    ///
    /// # Errors
    ///
    /// A [`Refusal`] naming why the request may not go on.
    pub fn check(
        &mut self,
        now_unix_secs: u64,
        scope: Scope,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        authorization: Option<&str>,
    ) -> Result<Operator, Refusal> {
        let result = self.decide(
            now_unix_secs,
            scope,
            method,
            path_and_query,
            body,
            authorization,
        );
        match &result {
            Ok(_) => self.counts.accepted += 1,
            Err(refusal) => self.counts.refused[refusal.kind.index()] += 1,
        }
        result
    }

    fn decide(
        &mut self,
        now: u64,
        scope: Scope,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        authorization: Option<&str>,
    ) -> Result<Operator, Refusal> {
        let refuse = |kind, key, message| Err(Refusal { kind, key, message });
        let Some(header) = authorization else {
            return refuse(
                RefusalKind::Unsigned,
                None,
                "this request is not signed: pass --key PATH or set SHOAL_OPERATOR_KEY to an \
                 operator key that the trust document names"
                    .into(),
            );
        };
        let auth = match RequestAuth::parse(header) {
            Ok(auth) => auth,
            Err(e) => return refuse(RefusalKind::Malformed, None, e),
        };
        let name = auth.key.fingerprint();
        let Some(scopes) = self.grants.get(&auth.key) else {
            return refuse(
                RefusalKind::UnknownKey,
                None,
                format!(
                    "operator key {name} is not named in the coordinator's trust document: \
                     add it with shoal trust init --operator KEY.pub=SCOPES"
                ),
            );
        };
        let key = Some(auth.key);
        if auth.time_unix_secs.abs_diff(now) > MAX_CLOCK_SKEW_SECS {
            return refuse(
                RefusalKind::Expired,
                key,
                format!(
                    "the request was signed at unix time {} but the coordinator's clock reads \
                     {now}: more than {MAX_CLOCK_SKEW_SECS} s apart; check both clocks and send \
                     it again",
                    auth.time_unix_secs
                ),
            );
        }
        if !auth.verifies(method, path_and_query, body) {
            return refuse(
                RefusalKind::BadSignature,
                key,
                format!(
                    "the signature by {name} does not cover this request: its method, path or \
                     body is not what was signed"
                ),
            );
        }
        if !scopes.contains(&scope) {
            let held: Vec<&str> = scopes.iter().map(Scope::as_str).collect();
            return refuse(
                RefusalKind::OutOfScope,
                key,
                format!(
                    "operator key {name} has scopes [{}], but {method} {} needs scope {scope}",
                    held.join(", "),
                    path_and_query.split('?').next().unwrap_or("")
                ),
            );
        }
        self.forget_before(now);
        let id = (auth.key.0, auth.nonce);
        if self.seen.contains(&id) {
            return refuse(
                RefusalKind::Replayed,
                key,
                format!(
                    "this request by {name} (nonce {}) was received before: a replay is \
                     refused; sign a new one",
                    hex::encode(auth.nonce)
                ),
            );
        }
        if self.seen.len() >= MAX_REMEMBERED_NONCES {
            return refuse(
                RefusalKind::Busy,
                key,
                format!(
                    "the coordinator remembers {MAX_REMEMBERED_NONCES} recent requests and can \
                     take no more now: try again in a few seconds"
                ),
            );
        }
        // After its time plus the skew the request is refused as expired, so it need not be
        // remembered longer.
        let until = auth.time_unix_secs.saturating_add(MAX_CLOCK_SKEW_SECS);
        self.seen.insert(id);
        self.forget.push(Reverse((until, id)));
        self.check_invariants();
        Ok(Operator {
            key: auth.key,
            scope,
        })
    }

    fn forget_before(&mut self, now: u64) {
        while let Some(Reverse((until, id))) = self.forget.peek().copied() {
            if until >= now {
                break;
            }
            self.forget.pop();
            self.seen.remove(&id);
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> &GateCounts {
        &self.counts
    }

    /// The scopes the trust document gives `key`, if it names it.
    pub fn scopes(&self, key: &PublicKey) -> Option<&[Scope]> {
        self.grants.get(key).map(Vec::as_slice)
    }

    /// Checks the gate's own invariants: every remembered nonce is due to be forgotten once, and
    /// the memory is within its bound.
    ///
    /// # Panics
    ///
    /// If one does not hold.
    pub fn check_invariants(&self) {
        assert_eq!(self.seen.len(), self.forget.len());
        assert!(self.seen.len() <= MAX_REMEMBERED_NONCES);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Role, SecretKey};

    const NOW: u64 = 1_800_000_000;

    fn operator(seed: u8) -> SecretKey {
        SecretKey::from_seed(Role::Operator, [seed; 32])
    }

    fn gate() -> Gate {
        Gate::new(&[
            OperatorGrant {
                key: operator(1).public(),
                scopes: vec![Scope::Admin, Scope::Release, Scope::Read],
            },
            OperatorGrant {
                key: operator(2).public(),
                scopes: vec![Scope::Read],
            },
        ])
    }

    fn signed(key: &SecretKey, time: u64, nonce: u8) -> String {
        RequestAuth::sign(key, "POST", "/v1/rollouts", b"{}", time, [nonce; 16]).header()
    }

    fn check(gate: &mut Gate, now: u64, header: Option<&str>) -> Result<Operator, RefusalKind> {
        gate.check(now, Scope::Release, "POST", "/v1/rollouts", b"{}", header)
            .map_err(|r| r.kind)
    }

    #[test]
    fn a_signed_request_in_scope_passes_once() {
        let mut gate = gate();
        let header = signed(&operator(1), NOW, 1);
        let who = check(&mut gate, NOW, Some(&header)).unwrap();
        assert_eq!(who.key, operator(1).public());
        assert_eq!(
            check(&mut gate, NOW + 1, Some(&header)),
            Err(RefusalKind::Replayed)
        );
        assert_eq!(gate.counts().accepted, 1);
        assert_eq!(gate.counts().refused[RefusalKind::Replayed.index()], 1);
    }

    #[test]
    fn each_bad_request_is_refused_for_its_reason() {
        let mut gate = gate();
        let cases = [
            (None, RefusalKind::Unsigned),
            (Some("Basic abc".to_owned()), RefusalKind::Malformed),
            (Some(signed(&operator(3), NOW, 1)), RefusalKind::UnknownKey),
            (
                Some(signed(&operator(1), NOW - MAX_CLOCK_SKEW_SECS - 1, 1)),
                RefusalKind::Expired,
            ),
            (
                Some(signed(&operator(1), NOW + MAX_CLOCK_SKEW_SECS + 1, 1)),
                RefusalKind::Expired,
            ),
            (Some(signed(&operator(2), NOW, 1)), RefusalKind::OutOfScope),
        ];
        for (header, kind) in cases {
            let refusal = gate
                .check(
                    NOW,
                    Scope::Release,
                    "POST",
                    "/v1/rollouts",
                    b"{}",
                    header.as_deref(),
                )
                .unwrap_err();
            assert_eq!(refusal.kind, kind, "{}", refusal.message);
            assert!(!refusal.message.is_empty());
        }
        let other_body = gate
            .check(
                NOW,
                Scope::Release,
                "POST",
                "/v1/rollouts",
                b"{\"x\":1}",
                Some(&signed(&operator(1), NOW, 2)),
            )
            .unwrap_err();
        assert_eq!(other_body.kind, RefusalKind::BadSignature);
        let scope = gate
            .check(
                NOW,
                Scope::Release,
                "POST",
                "/v1/rollouts",
                b"{}",
                Some(&signed(&operator(2), NOW, 3)),
            )
            .unwrap_err();
        assert_eq!(scope.key, Some(operator(2).public()));
        assert!(scope.message.contains("[read]"), "{}", scope.message);
        assert_eq!(gate.counts().accepted, 0);
        assert_eq!(gate.counts().refused.iter().sum::<u64>(), 8);
    }

    #[test]
    fn nonces_are_forgotten_once_their_requests_would_be_expired() {
        let mut gate = gate();
        for nonce in 0..10 {
            check(&mut gate, NOW, Some(&signed(&operator(1), NOW, nonce))).unwrap();
        }
        assert_eq!(gate.seen.len(), 10);
        let later = NOW + MAX_CLOCK_SKEW_SECS + 1;
        check(&mut gate, later, Some(&signed(&operator(1), later, 0))).unwrap();
        assert_eq!(gate.seen.len(), 1);
        gate.check_invariants();
    }

    #[test]
    fn a_full_memory_refuses_rather_than_forgets_early() {
        let mut gate = gate();
        for n in 0..MAX_REMEMBERED_NONCES {
            let id = (operator(1).public().0, (n as u128).to_le_bytes());
            gate.seen.insert(id);
            gate.forget.push(Reverse((NOW + 10, id)));
        }
        let header =
            RequestAuth::sign(&operator(1), "POST", "/v1/rollouts", b"{}", NOW, [0xff; 16])
                .header();
        assert_eq!(check(&mut gate, NOW, Some(&header)), Err(RefusalKind::Busy));
        gate.check_invariants();
    }
}
