//! Reply decoders: byte chunks (and received descriptors) in, typed values
//! or a [`CodecError`] out, with no socket anywhere.
//!
//! A transport asks [`ReplyDecoder::want`] what to read next, reads at most
//! that, and feeds it back. The bound matters: a reply's bytes may be
//! followed by a one-byte message carrying `SCM_RIGHTS`, and a plain read
//! that strayed into it would drop the descriptor; past the reply the bytes
//! belong to the next request. At EOF the transport asks
//! [`ReplyDecoder::eof`] which error that is: no answer at all, or one cut
//! short.
//!
//! Every length a stepd sends is bounded here before anything is read or
//! allocated for it.

use std::mem;

use super::protocol::{
    CodecError, INT_LEN, MAX_NAMESPACE_FDS, MAX_XAUTHORITY_LEN, Namespace, StepState, X11Display,
    check_handshake, encode_handshake_and_step_uid, op,
};

/// What a decoder needs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Up to this many bytes (never 0).
    Bytes(usize),
    /// One descriptor, passed with `SCM_RIGHTS` on a one-byte message.
    Fd,
    /// The reply is complete; nothing more may be read for it.
    Nothing,
}

/// What a layout expects after a field.
#[derive(Debug)]
pub enum Next<T> {
    Bytes(usize),
    Fd,
    Done(T),
}

/// The shape of one reply: told each complete field in turn (the first is
/// always one `int`), it says what follows. `F` is the descriptor type, so
/// tests and the fuzzer can pass stand-ins.
pub trait Layout<F>: Op {
    type Output;
    fn field(&mut self, bytes: &[u8]) -> Result<Next<Self::Output>, CodecError>;
    fn fd(&mut self, fd: F) -> Result<Next<Self::Output>, CodecError> {
        drop(fd);
        Err(malformed(self.op(), "descriptor where none was expected"))
    }
}

/// The operation a reply answers, which its errors name.
pub trait Op {
    fn op(&self) -> &'static str;
}

fn malformed(op: &'static str, detail: impl Into<String>) -> CodecError {
    CodecError::Malformed {
        op,
        detail: detail.into(),
    }
}

/// A field as a native-endian `int`; layouts only ask for ints in `INT_LEN`.
fn int(op: &'static str, bytes: &[u8]) -> Result<i32, CodecError> {
    let raw: [u8; INT_LEN] = bytes.try_into().map_err(|_| {
        malformed(
            op,
            format!("{}-byte field where an int was due", bytes.len()),
        )
    })?;
    Ok(i32::from_ne_bytes(raw))
}

#[derive(Debug)]
enum Stage {
    /// Filling a field of this many bytes.
    Field(usize),
    Fd,
    Done,
    /// A feed failed; the stream is at an unknown place.
    Failed,
}

/// Drives one [`Layout`] over the bytes of one reply.
#[derive(Debug)]
pub struct ReplyDecoder<L> {
    layout: L,
    stage: Stage,
    /// The current field's bytes so far.
    field: Vec<u8>,
    /// Bytes of this reply fed so far, to tell "no answer" from "cut short".
    fed: usize,
}

impl<L> ReplyDecoder<L> {
    pub fn new(layout: L) -> Self {
        ReplyDecoder {
            layout,
            stage: Stage::Field(INT_LEN),
            field: Vec::with_capacity(INT_LEN),
            fed: 0,
        }
    }

    pub fn want(&self) -> Want {
        match self.stage {
            // Never 0: a full field goes to its layout at once.
            Stage::Field(len) => Want::Bytes(len.saturating_sub(self.field.len()).max(1)),
            Stage::Fd => Want::Fd,
            Stage::Done | Stage::Failed => Want::Nothing,
        }
    }
}

impl<L: Op> ReplyDecoder<L> {
    /// The operation this reply answers.
    pub fn op(&self) -> &'static str {
        self.layout.op()
    }

    /// The error for a peer that closed now.
    pub fn eof(&self) -> CodecError {
        let op = self.layout.op();
        match self.stage {
            Stage::Field(_) if self.fed == 0 => CodecError::Closed { op },
            Stage::Field(len) => malformed(
                op,
                format!(
                    "connection closed mid-reply ({} of {len} bytes)",
                    self.field.len()
                ),
            ),
            Stage::Fd => malformed(op, "connection closed before the descriptor arrived"),
            Stage::Done | Stage::Failed => malformed(op, "connection closed after the reply"),
        }
    }

    /// Feed bytes read for this reply, at most [`Self::want`] of them. Some
    /// value once the reply is complete.
    pub fn feed<F>(&mut self, mut chunk: &[u8]) -> Result<Option<L::Output>, CodecError>
    where
        L: Layout<F>,
    {
        let op = self.layout.op();
        while !chunk.is_empty() {
            let Stage::Field(len) = self.stage else {
                return Err(self.fail(malformed(op, "more bytes than the reply holds")));
            };
            let take = len.saturating_sub(self.field.len()).min(chunk.len());
            let (head, rest) = chunk.split_at(take);
            self.field.extend_from_slice(head);
            self.fed = self.fed.saturating_add(take);
            chunk = rest;
            if self.field.len() >= len {
                let field = mem::take(&mut self.field);
                let next = self.layout.field(&field);
                if let Some(out) = self.advance(next)? {
                    if !chunk.is_empty() {
                        return Err(self.fail(malformed(op, "more bytes than the reply holds")));
                    }
                    return Ok(Some(out));
                }
            }
        }
        Ok(None)
    }

    /// Feed the descriptor read when [`Self::want`] said [`Want::Fd`].
    pub fn feed_fd<F>(&mut self, fd: F) -> Result<Option<L::Output>, CodecError>
    where
        L: Layout<F>,
    {
        if !matches!(self.stage, Stage::Fd) {
            drop(fd);
            let err = malformed(self.layout.op(), "descriptor where none was expected");
            return Err(self.fail(err));
        }
        let next = self.layout.fd(fd);
        self.advance(next)
    }

    fn advance<T>(&mut self, next: Result<Next<T>, CodecError>) -> Result<Option<T>, CodecError> {
        match next {
            // A layout ends its reply instead of asking for nothing (an
            // empty xauthority); a 0 here would never fill, so it fails.
            Ok(Next::Bytes(0)) => {
                let op = self.layout.op();
                Err(self.fail(malformed(op, "zero-length field")))
            }
            Ok(Next::Bytes(len)) => {
                self.stage = Stage::Field(len);
                Ok(None)
            }
            Ok(Next::Fd) => {
                self.stage = Stage::Fd;
                Ok(None)
            }
            Ok(Next::Done(out)) => {
                self.stage = Stage::Done;
                Ok(Some(out))
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn fail(&mut self, err: CodecError) -> CodecError {
        self.stage = Stage::Failed;
        err
    }
}

/// The handshake reply: the stepd's protocol version.
#[derive(Debug, Default)]
pub struct HandshakeReply;

impl Op for HandshakeReply {
    fn op(&self) -> &'static str {
        op::HANDSHAKE
    }
}

impl<F> Layout<F> for HandshakeReply {
    type Output = u32;
    fn field(&mut self, bytes: &[u8]) -> Result<Next<u32>, CodecError> {
        check_handshake(int(op::HANDSHAKE, bytes)?).map(Next::Done)
    }
}

/// A reply that is one `int`, taken as it is (REQUEST_DAEMON_PID).
#[derive(Debug)]
pub struct IntReply(pub &'static str);

impl Op for IntReply {
    fn op(&self) -> &'static str {
        self.0
    }
}

impl<F> Layout<F> for IntReply {
    type Output = i32;
    fn field(&mut self, bytes: &[u8]) -> Result<Next<i32>, CodecError> {
        int(self.0, bytes).map(Next::Done)
    }
}

/// REQUEST_STEP_UID: the job's uid, an unsigned `uid_t`.
#[derive(Debug, Default)]
pub struct StepUidReply;

impl Op for StepUidReply {
    fn op(&self) -> &'static str {
        op::STEP_UID
    }
}

impl<F> Layout<F> for StepUidReply {
    type Output = u32;
    fn field(&mut self, bytes: &[u8]) -> Result<Next<u32>, CodecError> {
        let raw: [u8; INT_LEN] = bytes.try_into().map_err(|_| {
            malformed(
                op::STEP_UID,
                format!("{}-byte field where a uid was due", bytes.len()),
            )
        })?;
        Ok(Next::Done(u32::from_ne_bytes(raw)))
    }
}

/// REQUEST_STATE, numbered as the stepd's version numbers it.
#[derive(Debug)]
pub struct StateReply {
    pub stepd_version: u32,
}

impl Op for StateReply {
    fn op(&self) -> &'static str {
        op::STATE
    }
}

impl<F> Layout<F> for StateReply {
    type Output = StepState;
    fn field(&mut self, bytes: &[u8]) -> Result<Next<StepState>, CodecError> {
        let raw = int(op::STATE, bytes)?;
        Ok(Next::Done(StepState::from_raw(raw, self.stepd_version)))
    }
}

/// REQUEST_ADD_EXTERN_PID: 0, or the stepd's refusal.
#[derive(Debug, Default)]
pub struct AddExternPidReply;

impl Op for AddExternPidReply {
    fn op(&self) -> &'static str {
        op::ADD_EXTERN_PID
    }
}

impl<F> Layout<F> for AddExternPidReply {
    type Output = ();
    fn field(&mut self, bytes: &[u8]) -> Result<Next<()>, CodecError> {
        match int(op::ADD_EXTERN_PID, bytes)? {
            0 => Ok(Next::Done(())),
            rc => Err(CodecError::Rejected {
                op: op::ADD_EXTERN_PID,
                rc,
            }),
        }
    }
}

/// REQUEST_X11_DISPLAY: display, xauthority length (counting the NUL),
/// xauthority bytes.
#[derive(Debug, Default)]
pub struct X11Reply {
    display: Option<i32>,
    length_read: bool,
}

impl Op for X11Reply {
    fn op(&self) -> &'static str {
        op::X11_DISPLAY
    }
}

impl<F> Layout<F> for X11Reply {
    type Output = X11Display;
    fn field(&mut self, bytes: &[u8]) -> Result<Next<X11Display>, CodecError> {
        const OP: &str = op::X11_DISPLAY;
        let Some(display) = self.display else {
            self.display = Some(int(OP, bytes)?);
            return Ok(Next::Bytes(INT_LEN));
        };
        if !self.length_read {
            self.length_read = true;
            let len = int(OP, bytes)?;
            let len = usize::try_from(len)
                .ok()
                .filter(|&n| n <= MAX_XAUTHORITY_LEN)
                .ok_or_else(|| {
                    malformed(
                        OP,
                        format!("xauthority length {len} outside 0..={MAX_XAUTHORITY_LEN}"),
                    )
                })?;
            if len > 0 {
                return Ok(Next::Bytes(len));
            }
            return Ok(Next::Done(X11Display {
                display,
                xauthority: None,
            }));
        }
        // The length counts the C string's NUL; stop at the first one.
        let path = bytes.split(|&b| b == 0).next().unwrap_or_default();
        let xauthority = if path.is_empty() {
            None
        } else {
            Some(
                String::from_utf8(path.to_vec())
                    .map_err(|_| malformed(OP, "xauthority path is not UTF-8"))?,
            )
        };
        Ok(Next::Done(X11Display {
            display,
            xauthority,
        }))
    }
}

/// REQUEST_GET_NS_FD (stepds before 25.11): an `int` that is 0 for "none",
/// negative for a refusal, else followed by one descriptor.
#[derive(Debug, Default)]
pub struct NsFdReply;

impl Op for NsFdReply {
    fn op(&self) -> &'static str {
        op::GET_NS_FD
    }
}

impl<F> Layout<F> for NsFdReply {
    type Output = Vec<Namespace<F>>;
    fn field(&mut self, bytes: &[u8]) -> Result<Next<Self::Output>, CodecError> {
        // The value is the stepd's own fd number: meaningless here except
        // as "one follows".
        match int(op::GET_NS_FD, bytes)? {
            0 => Ok(Next::Done(Vec::new())),
            rc if rc < 0 => Err(CodecError::Rejected {
                op: op::GET_NS_FD,
                rc,
            }),
            _ => Ok(Next::Fd),
        }
    }
    fn fd(&mut self, fd: F) -> Result<Next<Self::Output>, CodecError> {
        // Before 25.11 the one fd is the job container's mount namespace
        // (job_container/tmpfs's join_external), which pam_slurm_adopt
        // joins as CLONE_NEWNS: announcing it lets setns(2) refuse any
        // other kind.
        Ok(Next::Done(vec![Namespace {
            nstype: libc::CLONE_NEWNS,
            fd,
        }]))
    }
}

/// REQUEST_GET_NS_FDS (25.11+): a count, then per namespace its type and
/// its descriptor.
#[derive(Debug)]
pub struct NsFdsReply<F> {
    count: Option<usize>,
    nstype: Option<i32>,
    fds: Vec<Namespace<F>>,
}

impl<F> Default for NsFdsReply<F> {
    fn default() -> Self {
        NsFdsReply {
            count: None,
            nstype: None,
            fds: Vec::new(),
        }
    }
}

impl<F> Op for NsFdsReply<F> {
    fn op(&self) -> &'static str {
        op::GET_NS_FDS
    }
}

impl<F> Layout<F> for NsFdsReply<F> {
    type Output = Vec<Namespace<F>>;
    fn field(&mut self, bytes: &[u8]) -> Result<Next<Self::Output>, CodecError> {
        const OP: &str = op::GET_NS_FDS;
        let value = int(OP, bytes)?;
        if self.count.is_some() {
            self.nstype = Some(value);
            return Ok(Next::Fd);
        }
        let count = usize::try_from(value)
            .ok()
            .filter(|&n| n <= MAX_NAMESPACE_FDS)
            .ok_or_else(|| {
                malformed(
                    OP,
                    format!("namespace count {value} outside 0..={MAX_NAMESPACE_FDS}"),
                )
            })?;
        self.count = Some(count);
        self.fds.reserve_exact(count);
        Ok(if count == 0 {
            Next::Done(Vec::new())
        } else {
            Next::Bytes(INT_LEN)
        })
    }
    fn fd(&mut self, fd: F) -> Result<Next<Self::Output>, CodecError> {
        let Some(nstype) = self.nstype.take() else {
            drop(fd);
            return Err(malformed(op::GET_NS_FDS, "descriptor before its type"));
        };
        self.fds.push(Namespace { nstype, fd });
        Ok(if Some(self.fds.len()) == self.count {
            Next::Done(mem::take(&mut self.fds))
        } else {
            Next::Bytes(INT_LEN)
        })
    }
}

/// The scan's per-connection exchange: the pipelined handshake + STEP_UID
/// request going out, and both replies coming back, checked as they
/// complete (a rejected handshake is reported as such even if the stepd
/// then closes). The scan feeds it from a non-blocking socket; the fuzzer
/// feeds it chunks.
#[derive(Debug)]
pub struct UidExchange {
    request: [u8; 2 * INT_LEN],
    sent: usize,
    handshake: ReplyDecoder<HandshakeReply>,
    uid: ReplyDecoder<StepUidReply>,
    /// The stepd's version, once its handshake reply is in and acceptable.
    version: Option<u32>,
}

impl Default for UidExchange {
    fn default() -> Self {
        UidExchange::new()
    }
}

impl UidExchange {
    pub fn new() -> Self {
        UidExchange {
            request: encode_handshake_and_step_uid(),
            sent: 0,
            handshake: ReplyDecoder::new(HandshakeReply),
            uid: ReplyDecoder::new(StepUidReply),
            version: None,
        }
    }

    /// The request bytes not yet sent.
    pub fn unsent(&self) -> &[u8] {
        self.request.get(self.sent..).unwrap_or_default()
    }

    /// `n` more request bytes went out.
    pub fn sent(&mut self, n: usize) {
        self.sent = self.sent.saturating_add(n).min(self.request.len());
    }

    /// Stop sending: the stepd closed, maybe after answering (a rejected
    /// handshake), and what it sent, or the EOF, tells which.
    pub fn abandon_send(&mut self) {
        self.sent = self.request.len();
    }

    /// The operation the exchange is in, for errors.
    pub fn op(&self) -> &'static str {
        if self.version.is_none() {
            op::HANDSHAKE
        } else {
            op::STEP_UID
        }
    }

    /// The stepd's version, once the handshake reply is in.
    pub fn version(&self) -> Option<u32> {
        self.version
    }

    pub fn want(&self) -> Want {
        if self.version.is_none() {
            self.handshake.want()
        } else {
            self.uid.want()
        }
    }

    /// Feed at most [`Self::want`] reply bytes; the stepd's version and the
    /// uid once both replies are in.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Option<(u32, u32)>, CodecError> {
        match self.version {
            None => {
                self.version = self.handshake.feed::<()>(chunk)?;
                Ok(None)
            }
            Some(version) => Ok(self.uid.feed::<()>(chunk)?.map(|uid| (version, uid))),
        }
    }

    /// The error for a stepd that closed now.
    pub fn eof(&self) -> CodecError {
        if self.version.is_none() {
            self.handshake.eof()
        } else {
            self.uid.eof()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(words: &[i32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_ne_bytes()).collect()
    }

    /// A stand-in descriptor: which one it was.
    type Fake = u8;

    /// One item of a reply as a transport would see it.
    #[derive(Debug, Clone)]
    enum Item {
        Bytes(Vec<u8>),
        Fd(Fake),
    }

    /// Feed `items` the way a transport would (bytes in chunks of at most
    /// `chunk` and never more than wanted); the result, or the EOF error
    /// when the items run out first.
    fn run<L: Layout<Fake>>(
        layout: L,
        items: &[Item],
        chunk: usize,
    ) -> Result<L::Output, CodecError> {
        let mut d = ReplyDecoder::new(layout);
        let mut bytes: Vec<u8> = Vec::new();
        let mut fds: Vec<Fake> = Vec::new();
        let mut order = Vec::new();
        for item in items {
            match item {
                Item::Bytes(b) => {
                    for &x in b {
                        order.push(false);
                        bytes.push(x);
                    }
                }
                Item::Fd(f) => {
                    order.push(true);
                    fds.push(*f);
                }
            }
        }
        // A stream: bytes in order, descriptors where they were sent.
        let mut bytes = bytes.into_iter();
        let mut fds = fds.into_iter();
        let mut order = order.into_iter().peekable();
        loop {
            match d.want() {
                Want::Nothing => return Err(malformed("test", "want Nothing before Done")),
                Want::Bytes(n) => {
                    let mut got = Vec::new();
                    while got.len() < n.min(chunk) && order.peek() == Some(&false) {
                        order.next();
                        got.extend(bytes.next());
                    }
                    if got.is_empty() {
                        // A descriptor where bytes were due reads as its
                        // one carrier byte; none left is EOF.
                        if order.next() == Some(true) {
                            fds.next();
                            got.push(0);
                        } else {
                            return Err(d.eof());
                        }
                    }
                    if let Some(out) = d.feed(&got)? {
                        return Ok(out);
                    }
                }
                Want::Fd => {
                    if order.peek() == Some(&true) {
                        order.next();
                        let fd = fds.next().unwrap();
                        if let Some(out) = d.feed_fd(fd)? {
                            return Ok(out);
                        }
                    } else {
                        return Err(d.eof());
                    }
                }
            }
        }
    }

    fn b(words: &[i32]) -> Item {
        Item::Bytes(ints(words))
    }

    fn closed(op: &'static str) -> CodecError {
        CodecError::Closed { op }
    }

    fn mid(op: &'static str, got: usize, len: usize) -> CodecError {
        malformed(
            op,
            format!("connection closed mid-reply ({got} of {len} bytes)"),
        )
    }

    #[test]
    fn int_replies() {
        for chunk in [1, 2, 4, 64] {
            assert_eq!(run(IntReply(op::DAEMON_PID), &[b(&[77])], chunk), Ok(77));
            assert_eq!(run(StepUidReply, &[b(&[-2])], chunk), Ok(0xffff_fffe));
            assert_eq!(
                run(
                    StateReply {
                        stepd_version: 0x2800
                    },
                    &[b(&[3])],
                    chunk
                ),
                Ok(StepState::Cancelled)
            );
            assert_eq!(run(AddExternPidReply, &[b(&[0])], chunk), Ok(()));
            assert_eq!(
                run(AddExternPidReply, &[b(&[-1])], chunk),
                Err(CodecError::Rejected {
                    op: op::ADD_EXTERN_PID,
                    rc: -1
                })
            );
            assert_eq!(run(HandshakeReply, &[b(&[0x2B00])], chunk), Ok(0x2B00));
            assert_eq!(
                run(HandshakeReply, &[b(&[-1])], chunk),
                Err(CodecError::HandshakeRejected { reply: -1 })
            );
        }
    }

    #[test]
    fn short_replies_tell_no_answer_from_cut_short() {
        let short = Item::Bytes(vec![1, 2, 3]);
        assert_eq!(run(StepUidReply, &[], 4), Err(closed(op::STEP_UID)));
        assert_eq!(
            run(StepUidReply, std::slice::from_ref(&short), 4),
            Err(mid(op::STEP_UID, 3, 4))
        );
        assert_eq!(run(HandshakeReply, &[], 4), Err(closed(op::HANDSHAKE)));
        assert_eq!(
            run(IntReply(op::DAEMON_PID), &[short], 1),
            Err(mid(op::DAEMON_PID, 3, 4))
        );
        // The second field's absence is a short reply, not "no answer".
        assert_eq!(
            run(X11Reply::default(), &[b(&[10])], 4),
            Err(mid(op::X11_DISPLAY, 0, 4))
        );
        let mut cut = ints(&[10, 8]);
        cut.extend(b"/tmp");
        assert_eq!(
            run(X11Reply::default(), &[Item::Bytes(cut)], 3),
            Err(mid(op::X11_DISPLAY, 4, 8))
        );
        assert_eq!(
            run(NsFdReply, &[b(&[5])], 4),
            Err(malformed(
                op::GET_NS_FD,
                "connection closed before the descriptor arrived"
            ))
        );
        assert_eq!(
            run(
                NsFdsReply::default(),
                &[b(&[2, 1]), Item::Fd(1), b(&[2])],
                4
            ),
            Err(malformed(
                op::GET_NS_FDS,
                "connection closed before the descriptor arrived"
            ))
        );
    }

    #[test]
    fn x11_replies() {
        let with_path = |len: i32, path: &[u8]| {
            let mut v = ints(&[12, len]);
            v.extend(path);
            vec![Item::Bytes(v)]
        };
        let ok = |display, xauth: Option<&str>| {
            Ok(X11Display {
                display,
                xauthority: xauth.map(str::to_owned),
            })
        };
        let table: Vec<(Vec<Item>, Result<X11Display, CodecError>)> = vec![
            (vec![b(&[0, 0])], ok(0, None)),
            (with_path(8, b"/tmp/xa\0"), ok(12, Some("/tmp/xa"))),
            // No NUL: the whole length is the path.
            (with_path(3, b"/xa"), ok(12, Some("/xa"))),
            // Stops at the first NUL; what follows is consumed but unused.
            (with_path(6, b"/a\0zzz"), ok(12, Some("/a"))),
            (with_path(1, b"\0"), ok(12, None)),
            (
                with_path(2, b"\xff\0"),
                Err(malformed(op::X11_DISPLAY, "xauthority path is not UTF-8")),
            ),
            (
                vec![b(&[10, 1 << 30])],
                Err(malformed(
                    op::X11_DISPLAY,
                    "xauthority length 1073741824 outside 0..=4096",
                )),
            ),
            (
                vec![b(&[10, -1])],
                Err(malformed(
                    op::X11_DISPLAY,
                    "xauthority length -1 outside 0..=4096",
                )),
            ),
        ];
        for chunk in [1, 3, 4096] {
            for (items, want) in &table {
                assert_eq!(
                    &run(X11Reply::default(), items, chunk),
                    want,
                    "{items:?} by {chunk}"
                );
            }
        }
        // The longest allowed path is read in full.
        let path = vec![b'x'; MAX_XAUTHORITY_LEN];
        let got = run(X11Reply::default(), &with_path(4096, &path), 4096).unwrap();
        assert_eq!(got.xauthority.map(|s| s.len()), Some(MAX_XAUTHORITY_LEN));
    }

    #[test]
    fn namespace_replies() {
        let ns = |nstype, fd| Namespace { nstype, fd };
        assert_eq!(run(NsFdReply, &[b(&[0])], 4), Ok(vec![]));
        assert_eq!(
            run(NsFdReply, &[b(&[7]), Item::Fd(3)], 4),
            Ok(vec![ns(libc::CLONE_NEWNS, 3)])
        );
        assert_eq!(
            run(NsFdReply, &[b(&[-1])], 4),
            Err(CodecError::Rejected {
                op: op::GET_NS_FD,
                rc: -1
            })
        );
        assert_eq!(run(NsFdsReply::default(), &[b(&[0])], 4), Ok(vec![]));
        let three = [
            b(&[3, 0x2000_0000]),
            Item::Fd(1),
            b(&[0x1000_0000]),
            Item::Fd(2),
            b(&[0x0002_0000]),
            Item::Fd(3),
        ];
        for chunk in [1, 4, 8] {
            assert_eq!(
                run(NsFdsReply::default(), &three, chunk),
                Ok(vec![
                    ns(0x2000_0000, 1),
                    ns(0x1000_0000, 2),
                    ns(0x0002_0000, 3)
                ])
            );
        }
        for count in [-1, 9, i32::MAX] {
            assert_eq!(
                run(NsFdsReply::default(), &[b(&[count])], 4),
                Err(malformed(
                    op::GET_NS_FDS,
                    format!("namespace count {count} outside 0..=8")
                ))
            );
        }
        // Bytes where the descriptor was due: the carrier byte comes alone.
        assert_eq!(
            run(NsFdReply, &[b(&[7, 9])], 4),
            Err(malformed(
                op::GET_NS_FD,
                "connection closed before the descriptor arrived"
            ))
        );
    }

    #[test]
    fn misuse_is_an_error_not_a_panic() {
        // More bytes than wanted, a descriptor where none is due, feeding
        // after the end: each fails and the decoder stays failed.
        let mut d = ReplyDecoder::new(StepUidReply);
        assert!(d.feed::<Fake>(&ints(&[1, 2])).is_err());
        assert_eq!(d.want(), Want::Nothing);
        let mut d = ReplyDecoder::new(StepUidReply);
        assert!(d.feed_fd::<Fake>(1).is_err());
        let mut d = ReplyDecoder::new(IntReply(op::STATE));
        assert_eq!(d.feed::<Fake>(&ints(&[1])), Ok(Some(1)));
        assert_eq!(d.want(), Want::Nothing);
        assert!(d.feed::<Fake>(&[0]).is_err());
        let mut d = ReplyDecoder::new(NsFdsReply::<Fake>::default());
        assert_eq!(d.feed(&ints(&[1])), Ok(None));
        assert!(d.feed_fd(1).is_err(), "descriptor before its type");
        assert!(d.feed(&[]).is_ok(), "an empty chunk is no progress");

        // A layout that asks for nothing fails instead of spinning.
        struct AsksForNothing;
        impl Op for AsksForNothing {
            fn op(&self) -> &'static str {
                "nothing"
            }
        }
        impl Layout<Fake> for AsksForNothing {
            type Output = ();
            fn field(&mut self, _: &[u8]) -> Result<Next<()>, CodecError> {
                Ok(Next::Bytes(0))
            }
        }
        let mut d = ReplyDecoder::new(AsksForNothing);
        assert_eq!(
            d.feed(&ints(&[1])),
            Err(malformed("nothing", "zero-length field"))
        );
        assert_eq!(d.want(), Want::Nothing);
    }

    #[test]
    fn uid_exchange_pipelines_handshake_and_uid() {
        let mut x = UidExchange::new();
        assert_eq!(x.unsent(), ints(&[0x2D00, 20]));
        x.sent(3);
        assert_eq!(x.unsent().len(), 5);
        x.sent(100);
        assert!(x.unsent().is_empty());
        assert_eq!(x.op(), op::HANDSHAKE);
        let reply = ints(&[0x2900, 1001]);
        for chunk in [1, 2, 3, 4] {
            let mut x = UidExchange::new();
            let mut rest = reply.as_slice();
            let mut answer = None;
            while let Want::Bytes(n) = x.want() {
                let (head, tail) = rest.split_at(n.min(chunk).min(rest.len()));
                rest = tail;
                answer = x.feed(head).unwrap();
                if answer.is_some() {
                    break;
                }
            }
            assert_eq!(answer, Some((0x2900, 1001)), "by {chunk}");
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn uid_exchange_errors_name_the_stage() {
        let feed = |bytes: &[u8]| {
            let mut x = UidExchange::new();
            for &byte in bytes {
                if let Err(e) = x.feed(&[byte]) {
                    return e;
                }
            }
            x.eof()
        };
        assert_eq!(feed(&[]), closed(op::HANDSHAKE));
        assert_eq!(feed(&[0, 0]), mid(op::HANDSHAKE, 2, 4));
        assert_eq!(
            feed(&ints(&[-1])),
            CodecError::HandshakeRejected { reply: -1 }
        );
        assert!(matches!(
            feed(&ints(&[0x2500])),
            CodecError::Malformed {
                op: "handshake",
                ..
            }
        ));
        assert_eq!(feed(&ints(&[0x2600])), closed(op::STEP_UID));
        let mut partial = ints(&[0x2600]);
        partial.push(9);
        assert_eq!(feed(&partial), mid(op::STEP_UID, 1, 4));
        let mut x = UidExchange::new();
        x.feed(&ints(&[0x2600])).unwrap();
        assert_eq!(x.op(), op::STEP_UID);
        assert_eq!(x.version(), Some(0x2600));
    }
}
