//! Passing open file descriptors over the keeper's socket (`SCM_RIGHTS`),
//! beside its newline-delimited JSON.
//!
//! A line that carries descriptors is sent with one `sendmsg` whose
//! ancillary data holds them; the kernel hands them to the reader with the
//! line's first byte. [`FdReader`] reads the socket with `recvmsg` and keeps
//! what arrives in a queue, in order, so that whoever parses a line that
//! says it carries `n` descriptors takes the next `n` from the queue: by the
//! time a whole line has been read, its descriptors are there.

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, recvmsg, sendmsg,
};
use tokio::io::{AsyncRead, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// The most descriptors one line carries.
pub(super) const MAX_FDS: usize = 4;

/// Descriptors received and not yet taken by the line they came with.
pub(super) type Received = Arc<Mutex<VecDeque<OwnedFd>>>;

/// The reading half of a keeper connection, read with `recvmsg` so that
/// descriptors sent along with lines are kept (see the module's documentation).
pub(super) struct FdReader {
    half: OwnedReadHalf,
    received: Received,
}

impl FdReader {
    pub(super) fn new(half: OwnedReadHalf) -> (Self, Received) {
        let received = Received::default();
        (
            FdReader {
                half,
                received: received.clone(),
            },
            received,
        )
    }
}

impl AsyncRead for FdReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        loop {
            ready!(me.half.as_ref().poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let read = me.half.as_ref().try_io(Interest::READABLE, || {
                recvmsg(
                    me.half.as_ref(),
                    &mut [IoSliceMut::new(unfilled)],
                    &mut control,
                    RecvFlags::CMSG_CLOEXEC,
                )
                .map_err(io::Error::from)
            });
            match read {
                Ok(msg) => {
                    let mut queue = me.received.lock().unwrap_or_else(PoisonError::into_inner);
                    for message in control.drain() {
                        if let RecvAncillaryMessage::ScmRights(fds) = message {
                            queue.extend(fds);
                        }
                    }
                    buf.advance(msg.bytes);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// Takes the `n` descriptors that came with a line, in order; `None` if
/// fewer arrived (the sender broke the protocol).
pub(super) fn take(received: &Received, n: usize) -> Option<Vec<OwnedFd>> {
    let mut queue = received.lock().unwrap_or_else(PoisonError::into_inner);
    if queue.len() < n {
        return None;
    }
    Some(queue.drain(..n).collect())
}

/// Writes `line` with `fds` attached to its first byte.
///
/// # Errors
/// The connection is closed.
pub(super) async fn send_with_fds(
    half: &mut OwnedWriteHalf,
    line: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    if fds.is_empty() {
        return half.write_all(line).await;
    }
    let sent = loop {
        half.as_ref().writable().await?;
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(io::Error::other("too many descriptors for one line"));
        }
        let stream = half.as_ref();
        match stream.try_io(Interest::WRITABLE, || {
            sendmsg(
                stream.as_fd(),
                &[IoSlice::new(line)],
                &mut control,
                SendFlags::NOSIGNAL,
            )
            .map_err(io::Error::from)
        }) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    };
    half.write_all(&line[sent..]).await
}
