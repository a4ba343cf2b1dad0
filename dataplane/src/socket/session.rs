//! The per-worker session table: one entry per (VIP, client address:port), bounded.
//!
//! Sans-I/O: the table stores any `T` (the worker stores the session's upstream socket) and
//! takes the time as an argument, so expiry and the cap are tested with a simulated clock.
//!
//! Entries live in a slab (`Vec` of slots plus a free list) and are named by a [`Token`]:
//! slot index and the slot's generation, so a token of an expired session never reaches the
//! session that reuses its slot (an epoll event can be in flight while a session closes). A
//! lookup by key is one `FxHashMap` probe; only creating a session may allocate (the map and
//! the slab grow per client, never per packet), and the table never holds more than `max`
//! entries.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

/// What identifies a session: the worker's VIP socket slot and the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SessionKey {
    /// The worker's slot of the VIP socket the client sent to.
    pub vip_slot: u32,
    /// The client's address and port.
    pub client: SocketAddr,
    /// On a wildcard VIP, the address the client sent to: replies leave from it, and a
    /// client that uses two addresses has two sessions. `None` on a specific VIP.
    pub local: Option<IpAddr>,
}

/// Names one live session: slot index in the low 32 bits, generation in the next 31. The top
/// bit is always clear, free for the caller to tag other kinds of tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Token(pub u64);

/// Generations wrap at 2^31, keeping the token's top bit clear.
const GENERATION_MASK: u32 = 0x7fff_ffff;

impl Token {
    fn new(index: u32, generation: u32) -> Self {
        Self(u64::from(generation & GENERATION_MASK) << 32 | u64::from(index))
    }

    fn index(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }

    fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

/// One session.
#[derive(Debug)]
pub(crate) struct Session<T> {
    /// Its key.
    pub key: SessionKey,
    /// Last datagram in either direction.
    pub last_seen: Instant,
    /// The caller's per-session state.
    pub io: T,
}

#[derive(Debug)]
struct Slot<T> {
    generation: u32,
    session: Option<Session<T>>,
}

/// Why [`Sessions::get_or_insert_with`] found no session.
#[derive(Debug)]
pub(crate) enum InsertError<E> {
    /// The table already holds `max` sessions.
    Full,
    /// The constructor failed.
    Open(E),
}

/// A bounded session table with idle expiry.
#[derive(Debug)]
pub(crate) struct Sessions<T> {
    by_key: FxHashMap<SessionKey, Token>,
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    max: usize,
    idle: Duration,
}

impl<T> Sessions<T> {
    /// An empty table holding at most `max` sessions, each expiring after `idle` without
    /// traffic.
    pub fn new(max: usize, idle: Duration) -> Self {
        Self {
            by_key: FxHashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            max: max.min(u32::MAX as usize),
            idle,
        }
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether no session is held.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The session of `key`, marked seen at `now`; when there is none and the table has
    /// room, `open(token)` builds its state (the token is the new session's name).
    ///
    /// # Errors
    /// [`InsertError::Full`] at the cap; [`InsertError::Open`] when `open` fails (nothing is
    /// inserted then).
    #[inline]
    pub(crate) fn get_or_insert_with<E>(
        &mut self,
        key: SessionKey,
        now: Instant,
        open: impl FnOnce(Token) -> Result<T, E>,
    ) -> Result<Token, InsertError<E>> {
        if let Some(&token) = self.by_key.get(&key) {
            if let Some(s) = self.get_mut(token) {
                s.last_seen = now;
            }
            return Ok(token);
        }
        if self.by_key.len() >= self.max {
            return Err(InsertError::Full);
        }
        let index = match self.free.last() {
            Some(&i) => i,
            None => self.slots.len() as u32,
        };
        let generation = self.slots.get(index as usize).map_or(0, |s| s.generation);
        let token = Token::new(index, generation);
        let io = open(token).map_err(InsertError::Open)?;
        let session = Some(Session {
            key,
            last_seen: now,
            io,
        });
        if (index as usize) < self.slots.len() {
            self.free.pop();
            self.slots[index as usize].session = session;
        } else {
            self.slots.push(Slot {
                generation,
                session,
            });
        }
        self.by_key.insert(key, token);
        Ok(token)
    }

    /// The live session named `token`.
    #[inline]
    pub fn get_mut(&mut self, token: Token) -> Option<&mut Session<T>> {
        let slot = self.slots.get_mut(token.index())?;
        if slot.generation != token.generation() {
            return None;
        }
        slot.session.as_mut()
    }

    /// The live session named `token`.
    #[inline]
    pub fn get(&self, token: Token) -> Option<&Session<T>> {
        let slot = self.slots.get(token.index())?;
        if slot.generation != token.generation() {
            return None;
        }
        slot.session.as_ref()
    }

    fn remove_at(&mut self, index: usize) -> Option<Session<T>> {
        let slot = self.slots.get_mut(index)?;
        let s = slot.session.take()?;
        // A new generation: tokens of the old session (in flight in an epoll batch) stop
        // matching.
        slot.generation = slot.generation.wrapping_add(1) & GENERATION_MASK;
        self.free.push(index as u32);
        self.by_key.remove(&s.key);
        Some(s)
    }

    /// Removes every session not seen for [`Sessions::idle`] at `now`, handing each to
    /// `closed`.
    pub fn expire(&mut self, now: Instant, mut closed: impl FnMut(Session<T>)) {
        let idle = self.idle;
        self.remove_where(
            |s| now.saturating_duration_since(s.last_seen) >= idle,
            &mut closed,
        );
    }

    /// Removes every session for which `pred` holds, handing each to `closed`.
    pub(crate) fn remove_where(
        &mut self,
        mut pred: impl FnMut(&Session<T>) -> bool,
        mut closed: impl FnMut(Session<T>),
    ) {
        for i in 0..self.slots.len() {
            if self.slots[i].session.as_ref().is_some_and(&mut pred) {
                if let Some(s) = self.remove_at(i) {
                    closed(s);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> SessionKey {
        SessionKey {
            vip_slot: 0,
            client: SocketAddr::from(([198, 18, 0, 1], port)),
            local: None,
        }
    }

    fn open(_: Token) -> Result<(), ()> {
        Ok(())
    }

    #[test]
    fn one_session_per_client_and_vip() {
        let t0 = Instant::now();
        let mut s = Sessions::<()>::new(10, Duration::from_secs(60));
        let a = s.get_or_insert_with(key(1), t0, open).unwrap();
        let again = s.get_or_insert_with(key(1), t0, |_| -> Result<(), ()> {
            panic!("an existing session must not be reopened")
        });
        assert_eq!(again.unwrap(), a);
        let other_vip = SessionKey {
            vip_slot: 1,
            ..key(1)
        };
        let b = s.get_or_insert_with(other_vip, t0, open).unwrap();
        assert_ne!(a, b);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn sessions_expire_after_idle_and_traffic_keeps_them() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(60);
        let mut s = Sessions::<u16>::new(10, idle);
        let quiet = s
            .get_or_insert_with(key(1), t0, |_| Ok::<_, ()>(1))
            .unwrap();
        let busy = s
            .get_or_insert_with(key(2), t0, |_| Ok::<_, ()>(2))
            .unwrap();
        // Traffic at t0+50 s refreshes `busy` only.
        s.get_or_insert_with(key(2), t0 + Duration::from_secs(50), open_unused)
            .unwrap();
        let mut closed = Vec::new();
        s.expire(t0 + Duration::from_secs(59), |x| closed.push(x.io));
        assert!(closed.is_empty(), "nothing is idle for 60 s yet");
        s.expire(t0 + idle, |x| closed.push(x.io));
        assert_eq!(closed, [1]);
        assert!(s.get(quiet).is_none());
        assert_eq!(s.get(busy).map(|x| x.io), Some(2));
        // A reply (marked through get_mut) also counts as traffic.
        s.get_mut(busy).unwrap().last_seen = t0 + Duration::from_secs(100);
        s.expire(t0 + Duration::from_secs(159), |x| closed.push(x.io));
        assert_eq!(s.len(), 1);
        s.expire(t0 + Duration::from_secs(160), |x| closed.push(x.io));
        assert_eq!(closed, [1, 2]);
        assert!(s.is_empty());
    }

    fn open_unused(_: Token) -> Result<u16, ()> {
        panic!("must not open")
    }

    #[test]
    fn the_cap_refuses_new_clients_but_serves_existing_ones() {
        let t0 = Instant::now();
        let mut s = Sessions::<()>::new(3, Duration::from_secs(1));
        for p in 1..=3 {
            s.get_or_insert_with(key(p), t0, open).unwrap();
        }
        assert!(matches!(
            s.get_or_insert_with(key(4), t0, open),
            Err(InsertError::Full)
        ));
        assert!(s.get_or_insert_with(key(2), t0, open).is_ok());
        assert_eq!(s.len(), 3);
        // Expiry frees room again.
        s.expire(t0 + Duration::from_secs(1), |_| {});
        assert!(s.get_or_insert_with(key(4), t0, open).is_ok());
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn a_failed_open_inserts_nothing() {
        let t0 = Instant::now();
        let mut s = Sessions::<()>::new(3, Duration::from_secs(1));
        assert!(matches!(
            s.get_or_insert_with(key(1), t0, |_| Err("emfile")),
            Err(InsertError::Open("emfile"))
        ));
        assert!(s.is_empty());
        assert!(s.get_or_insert_with(key(1), t0, open).is_ok());
    }

    #[test]
    fn a_stale_token_never_reaches_the_slot_s_next_session() {
        let t0 = Instant::now();
        let mut s = Sessions::<u16>::new(3, Duration::from_secs(1));
        let old = s
            .get_or_insert_with(key(1), t0, |_| Ok::<_, ()>(1))
            .unwrap();
        s.remove_where(|_| true, |_| {});
        let new = s
            .get_or_insert_with(key(2), t0, |t| {
                assert_ne!(t, old);
                Ok::<_, ()>(2)
            })
            .unwrap();
        assert_ne!(old, new);
        assert!(s.get(old).is_none());
        assert_eq!(s.get(new).map(|x| x.io), Some(2));
    }
}
