//! The coordinator's check of operator requests: who signed, whether the key may, and whether
//! the request was seen before.

use super::{MAX_CLOCK_SKEW_SECS, Operator, OperatorGrant, RequestAuth, Scope};
use crate::keys::PublicKey;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet};

/// The most requests remembered at once. Every accepted request is remembered until its time
/// is past the clock skew, about two minutes, so this bounds the sustained rate at about 8,000
/// requests a second, in about 60 MB at the most.
pub const MAX_REMEMBERED: usize = 1_000_000;

/// The most requests of one operator key remembered at once: a key that sends more is refused
/// (429) while the others go on.
pub const MAX_REMEMBERED_PER_KEY: usize = MAX_REMEMBERED / 4;

/// A request's identity in the replay memory: 128 bits of the BLAKE3 hash of its key and nonce.
type RequestId = u128;

fn request_id(key: &PublicKey, nonce: &[u8; 16]) -> RequestId {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&key.0);
    hasher.update(nonce);
    let hash = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash.as_bytes()[..16]);
    u128::from_le_bytes(bytes)
}

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
    /// The replay memory, or the key's share of it, is full.
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
    /// Each operator key's scopes, and its number in `remembered`.
    grants: BTreeMap<PublicKey, (usize, Vec<Scope>)>,
    seen: HashSet<RequestId>,
    /// When each remembered request may be forgotten (Unix seconds), soonest first, with its
    /// key's number.
    forget: BinaryHeap<Reverse<(u64, RequestId, usize)>>,
    /// Requests remembered per key.
    remembered: Vec<usize>,
    limit: usize,
    limit_per_key: usize,
    counts: GateCounts,
}

impl Gate {
    /// A gate for the operator keys the trust document names.
    pub fn new(grants: &[OperatorGrant]) -> Self {
        Self::with_limits(grants, MAX_REMEMBERED, MAX_REMEMBERED_PER_KEY)
    }

    /// A gate that remembers at most `limit` requests, `limit_per_key` of one key.
    pub fn with_limits(grants: &[OperatorGrant], limit: usize, limit_per_key: usize) -> Self {
        Self {
            grants: grants
                .iter()
                .enumerate()
                .map(|(i, g)| (g.key, (i, g.scopes.clone())))
                .collect(),
            seen: HashSet::new(),
            forget: BinaryHeap::new(),
            remembered: vec![0; grants.len()],
            limit,
            limit_per_key,
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
        let Some((number, scopes)) = self.grants.get(&auth.key).cloned() else {
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
        let id = request_id(&auth.key, &auth.nonce);
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
        if self.remembered[number] >= self.limit_per_key {
            return refuse(
                RefusalKind::Busy,
                key,
                format!(
                    "operator key {name} sent {} requests in the last {} s, more than the \
                     coordinator keeps for one key: slow down and try again in a few seconds",
                    self.remembered[number],
                    2 * MAX_CLOCK_SKEW_SECS
                ),
            );
        }
        if self.seen.len() >= self.limit {
            return refuse(
                RefusalKind::Busy,
                key,
                format!(
                    "the coordinator remembers {} recent requests and can take no more now: \
                     try again in a few seconds",
                    self.limit
                ),
            );
        }
        // After its time plus the skew the request is refused as expired, so it need not be
        // remembered longer.
        let until = auth.time_unix_secs.saturating_add(MAX_CLOCK_SKEW_SECS);
        self.seen.insert(id);
        self.remembered[number] += 1;
        self.forget.push(Reverse((until, id, number)));
        self.check_invariants();
        Ok(Operator {
            key: auth.key,
            scope,
        })
    }

    fn forget_before(&mut self, now: u64) {
        while let Some(Reverse((until, id, number))) = self.forget.peek().copied() {
            if until >= now {
                break;
            }
            self.forget.pop();
            self.seen.remove(&id);
            self.remembered[number] -= 1;
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> &GateCounts {
        &self.counts
    }

    /// The scopes the trust document gives `key`, if it names it.
    pub fn scopes(&self, key: &PublicKey) -> Option<&[Scope]> {
        self.grants.get(key).map(|(_, scopes)| scopes.as_slice())
    }

    /// Checks the gate's own invariants: every remembered nonce is due to be forgotten once, and
    /// the memory is within its bound.
    ///
    /// # Panics
    ///
    /// If one does not hold.
    pub fn check_invariants(&self) {
        assert_eq!(self.seen.len(), self.forget.len());
        assert_eq!(self.remembered.iter().sum::<usize>(), self.seen.len());
        assert!(self.seen.len() <= self.limit);
        assert!(self.remembered.iter().all(|n| *n <= self.limit_per_key));
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

    /// A `POST /v1/rollouts` with `body`, which needs the release scope.
    fn post(
        gate: &mut Gate,
        now: u64,
        body: &[u8],
        header: Option<&str>,
    ) -> Result<Operator, Refusal> {
        gate.check(now, Scope::Release, "POST", "/v1/rollouts", body, header)
    }

    fn check(gate: &mut Gate, now: u64, header: Option<&str>) -> Result<Operator, RefusalKind> {
        post(gate, now, b"{}", header).map_err(|r| r.kind)
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
            let refusal = post(&mut gate, NOW, b"{}", header.as_deref()).unwrap_err();
            assert_eq!(refusal.kind, kind, "{}", refusal.message);
            assert!(!refusal.message.is_empty());
        }
        let other_body = post(
            &mut gate,
            NOW,
            b"{\"x\":1}",
            Some(&signed(&operator(1), NOW, 2)),
        )
        .unwrap_err();
        assert_eq!(other_body.kind, RefusalKind::BadSignature);
        let scope = post(&mut gate, NOW, b"{}", Some(&signed(&operator(2), NOW, 3))).unwrap_err();
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
    fn a_key_that_floods_is_refused_while_others_go_on() {
        let grants = [
            OperatorGrant {
                key: operator(1).public(),
                scopes: vec![Scope::Release],
            },
            OperatorGrant {
                key: operator(2).public(),
                scopes: vec![Scope::Release],
            },
        ];
        let mut gate = Gate::with_limits(&grants, 5, 3);
        for nonce in 0..3 {
            check(&mut gate, NOW, Some(&signed(&operator(1), NOW, nonce))).unwrap();
        }
        let flood = post(&mut gate, NOW, b"{}", Some(&signed(&operator(1), NOW, 9))).unwrap_err();
        assert_eq!(flood.kind, RefusalKind::Busy);
        assert!(flood.message.contains("slow down"), "{}", flood.message);
        for nonce in 0..2 {
            check(&mut gate, NOW, Some(&signed(&operator(2), NOW, nonce))).unwrap();
        }
        assert_eq!(
            check(&mut gate, NOW, Some(&signed(&operator(2), NOW, 7))),
            Err(RefusalKind::Busy),
            "the whole memory is full"
        );
        // Once the first requests are past the skew, room comes back.
        let later = NOW + MAX_CLOCK_SKEW_SECS + 1;
        check(&mut gate, later, Some(&signed(&operator(1), later, 9))).unwrap();
        gate.check_invariants();
    }
}
