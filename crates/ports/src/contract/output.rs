//! The output-store contract: what every [`OutputStore`] must do.

use std::sync::Arc;

use bpm_domain::ProcessId;

use crate::{Cursor, OutputChunk, OutputQuery, OutputStore, Stream, StreamSelect};

/// The per-process cap, in bytes, that the store under test must be built with.
pub const CONTRACT_CAP: u64 = 4096;

fn id(n: u128) -> ProcessId {
    ProcessId::from_uuid(uuid::Uuid::from_u128(n))
}

fn query(cursor: Option<u64>) -> OutputQuery {
    OutputQuery {
        cursor: cursor.map(Cursor),
        ..OutputQuery::default()
    }
}

/// A read of everything kept, from offset 0, so what rotation dropped is skipped.
async fn read_everything(store: &dyn OutputStore, process: ProcessId) -> OutputChunk {
    store
        .read(
            process,
            &OutputQuery {
                cursor: Some(Cursor(0)),
                max_bytes: 1 << 20,
                ..OutputQuery::default()
            },
        )
        .await
        .expect("read")
}

/// What was appended reads back, with the cursor at its end.
pub async fn append_then_read(store: Arc<dyn OutputStore>) {
    let end = store
        .append(id(1), Stream::Stdout, b"hello\n")
        .await
        .expect("append");
    assert_eq!(end, Cursor(6));
    let chunk = store.read(id(1), &query(None)).await.expect("read");
    assert_eq!(chunk.bytes(), b"hello\n");
    assert_eq!(chunk.next, Cursor(6));
    assert_eq!(chunk.skipped, 0);
    assert!(!chunk.truncated);
}

/// A read from the previous `next` returns only what was written since.
pub async fn cursor_reads_only_what_is_new(store: Arc<dyn OutputStore>) {
    store
        .append(id(1), Stream::Stdout, b"one\n")
        .await
        .expect("append");
    let first = store.read(id(1), &query(None)).await.expect("read");
    store
        .append(id(1), Stream::Stderr, b"two\n")
        .await
        .expect("append");
    store
        .append(id(1), Stream::Stdout, b"three\n")
        .await
        .expect("append");
    let second = store
        .read(id(1), &query(Some(first.next.0)))
        .await
        .expect("read");
    assert_eq!(second.text(), "two\nthree\n");
    assert_eq!(second.next, Cursor(14));
    let third = store
        .read(id(1), &query(Some(second.next.0)))
        .await
        .expect("read");
    assert!(third.pieces.is_empty());
    assert_eq!(third.next, second.next);
    let beyond = store.read(id(1), &query(Some(1000))).await.expect("read");
    assert!(beyond.pieces.is_empty());
    assert_eq!(beyond.next, Cursor(1000));
}

/// Two readers each see everything: reading consumes nothing.
pub async fn reading_consumes_nothing(store: Arc<dyn OutputStore>) {
    store
        .append(id(1), Stream::Stdout, b"shared\n")
        .await
        .expect("append");
    let a = store.read(id(1), &query(None)).await.expect("read");
    let b = store.read(id(1), &query(None)).await.expect("read");
    assert_eq!(a, b);
    assert_eq!(a.text(), "shared\n");
}

/// Each stream can be read alone; both read in the order written, tagged.
pub async fn streams_are_selected_and_ordered(store: Arc<dyn OutputStore>) {
    store
        .append(id(1), Stream::Stdout, b"o1 ")
        .await
        .expect("append");
    store
        .append(id(1), Stream::Stderr, b"e1 ")
        .await
        .expect("append");
    store
        .append(id(1), Stream::Stdout, b"o2 ")
        .await
        .expect("append");
    let both = store.read(id(1), &query(None)).await.expect("read");
    let tagged: Vec<_> = both
        .pieces
        .iter()
        .map(|p| (p.stream, p.offset, p.data.clone()))
        .collect();
    assert_eq!(
        tagged,
        vec![
            (Stream::Stdout, 0, b"o1 ".to_vec()),
            (Stream::Stderr, 3, b"e1 ".to_vec()),
            (Stream::Stdout, 6, b"o2 ".to_vec()),
        ]
    );
    let out = store
        .read(
            id(1),
            &OutputQuery {
                stream: StreamSelect::Stdout,
                ..OutputQuery::default()
            },
        )
        .await
        .expect("read");
    assert_eq!(out.text(), "o1 o2 ");
    assert_eq!(out.next, Cursor(9));
    let err = store
        .read(
            id(1),
            &OutputQuery {
                stream: StreamSelect::Stderr,
                ..OutputQuery::default()
            },
        )
        .await
        .expect("read");
    assert_eq!(err.text(), "e1 ");
    assert_eq!(err.next, Cursor(9));
}

/// Tail returns the last lines, counting a final unterminated line.
pub async fn tail_returns_last_lines(store: Arc<dyn OutputStore>) {
    store
        .append(id(1), Stream::Stdout, b"a\nb\n")
        .await
        .expect("append");
    store
        .append(id(1), Stream::Stderr, b"c\n")
        .await
        .expect("append");
    store
        .append(id(1), Stream::Stdout, b"d\npartial")
        .await
        .expect("append");
    let t = store
        .tail(id(1), StreamSelect::Both, 3, usize::MAX)
        .await
        .expect("tail");
    assert_eq!(t.text(), "c\nd\npartial");
    assert_eq!(t.next, Cursor(15));
    let t = store
        .tail(id(1), StreamSelect::Stdout, 2, usize::MAX)
        .await
        .expect("tail");
    assert_eq!(t.text(), "d\npartial");
    let t = store
        .tail(id(1), StreamSelect::Stderr, 10, usize::MAX)
        .await
        .expect("tail");
    assert_eq!(t.text(), "c\n");
    let t = store
        .tail(id(1), StreamSelect::Both, 0, usize::MAX)
        .await
        .expect("tail");
    assert!(t.pieces.is_empty());
    let t = store
        .tail(id(1), StreamSelect::Both, 100, usize::MAX)
        .await
        .expect("tail");
    assert_eq!(t.text(), "a\nb\nc\nd\npartial");
}

/// A tail is at most `max_bytes`: lines longer than that keep their newest
/// bytes, at their own offsets, and the tail says it was cut.
pub async fn tail_keeps_the_newest_max_bytes(store: Arc<dyn OutputStore>) {
    store
        .append(id(1), Stream::Stdout, b"older\n")
        .await
        .expect("append");
    store
        .append(id(1), Stream::Stderr, b"err\n")
        .await
        .expect("append");
    // One line of 3,000 bytes, no newline: most of the contract's cap.
    let long: Vec<u8> = (0..3000u32).map(|i| b'a' + (i % 26) as u8).collect();
    store
        .append(id(1), Stream::Stdout, &long[..1000])
        .await
        .expect("append");
    store
        .append(id(1), Stream::Stdout, &long[1000..])
        .await
        .expect("append");
    let end = 6 + 4 + 3000;
    let t = store
        .tail(id(1), StreamSelect::Both, 20, 100)
        .await
        .expect("tail");
    assert_eq!(t.text().as_bytes(), &long[2900..], "the newest 100 bytes");
    assert!(t.truncated, "a cut tail says so");
    assert_eq!(t.pieces[0].offset, end - 100, "bytes keep their offsets");
    assert_eq!(t.next, Cursor(end));
    // Across a write's border.
    let t = store
        .tail(id(1), StreamSelect::Stdout, 1, 2500)
        .await
        .expect("tail");
    assert_eq!(t.text().as_bytes(), &long[500..]);
    assert!(t.truncated);
    // Exactly as much as the lines hold is not a cut.
    let t = store
        .tail(id(1), StreamSelect::Both, 2, 3004)
        .await
        .expect("tail");
    assert_eq!(t.text().len(), 3004);
    assert!(t.text().starts_with("err\n"));
    assert!(!t.truncated, "nothing was left out");
    // Another stream's long line does not cut this one's.
    let t = store
        .tail(id(1), StreamSelect::Stderr, 5, 100)
        .await
        .expect("tail");
    assert_eq!(t.text(), "err\n");
    assert!(!t.truncated);
    let t = store
        .tail(id(1), StreamSelect::Both, 5, 0)
        .await
        .expect("tail");
    assert!(t.pieces.is_empty() && t.truncated);
}

/// A read stops at `max_bytes`, says so, and the next read resumes exactly.
pub async fn max_bytes_truncates_and_resumes(store: Arc<dyn OutputStore>) {
    store
        .append(id(1), Stream::Stdout, b"0123456789")
        .await
        .expect("append");
    store
        .append(id(1), Stream::Stderr, b"abcdef")
        .await
        .expect("append");
    let q = |c| OutputQuery {
        cursor: Some(Cursor(c)),
        max_bytes: 7,
        ..OutputQuery::default()
    };
    let mut cursor = 0;
    let mut all = Vec::new();
    loop {
        let chunk = store.read(id(1), &q(cursor)).await.expect("read");
        assert!(chunk.bytes().len() <= 7);
        all.extend(chunk.bytes());
        cursor = chunk.next.0;
        if !chunk.truncated {
            break;
        }
    }
    assert_eq!(all, b"0123456789abcdef");
    assert_eq!(cursor, 16);
}

/// Bytes that are not UTF-8 come back exactly.
pub async fn non_utf8_bytes_are_kept(store: Arc<dyn OutputStore>) {
    let raw = [0xff, 0xfe, b'o', b'k', 0x00, 0xc3, 0x28, b'\n'];
    store
        .append(id(1), Stream::Stdout, &raw)
        .await
        .expect("append");
    let chunk = store.read(id(1), &query(None)).await.expect("read");
    assert_eq!(chunk.bytes(), raw);
    assert!(chunk.text().contains('\u{fffd}'));
}

/// Past the cap the oldest output goes; a reader from 0 is told how much it missed.
pub async fn cap_drops_oldest_and_reports_skipped(store: Arc<dyn OutputStore>) {
    let line = [b'x'; 99]
        .iter()
        .copied()
        .chain([b'\n'])
        .collect::<Vec<_>>();
    for _ in 0..100 {
        store
            .append(id(1), Stream::Stdout, &line)
            .await
            .expect("append");
    }
    store
        .append(id(1), Stream::Stderr, b"last\n")
        .await
        .expect("append");
    let total = 100 * 100 + 5;
    let chunk = read_everything(&*store, id(1)).await;
    let kept = chunk.bytes().len() as u64;
    assert!(
        kept <= CONTRACT_CAP,
        "kept {kept} bytes over the cap {CONTRACT_CAP}"
    );
    assert!(kept >= CONTRACT_CAP / 2, "kept only {kept} bytes");
    assert_eq!(
        chunk.skipped + kept,
        total,
        "skipped + kept must account for every byte"
    );
    assert_eq!(chunk.next, Cursor(total));
    assert!(chunk.text().ends_with("last\n"));
    let t = store
        .tail(id(1), StreamSelect::Both, 1, usize::MAX)
        .await
        .expect("tail");
    assert_eq!(t.text(), "last\n");
}

/// Whatever the sizes of the writes, what is kept is the newest output, with
/// no gap: one write larger than the store's segments must not leave older
/// bytes kept behind newer ones that were dropped.
pub async fn kept_output_is_always_the_newest_without_gaps(store: Arc<dyn OutputStore>) {
    let cap = usize::try_from(CONTRACT_CAP).expect("a small cap");
    let sizes = [
        700,
        cap / 2 + 52,
        30,
        cap + 904,
        1,
        cap / 2,
        cap / 2 + 1,
        cap,
        cap + 1,
        13,
        3 * cap,
        cap / 2 - 1,
    ];
    let mut written: Vec<u8> = Vec::new();
    for (n, size) in sizes.into_iter().enumerate() {
        // Every byte tells where it was written, so a gap cannot pass for a suffix.
        let data: Vec<u8> = (0..size)
            .map(|i| b'a' + u8::try_from((written.len() + i) % 26).expect("< 26"))
            .collect();
        let stream = if n % 3 == 2 {
            Stream::Stderr
        } else {
            Stream::Stdout
        };
        let end = store.append(id(1), stream, &data).await.expect("append");
        written.extend_from_slice(&data);
        let total = written.len() as u64;
        assert_eq!(end, Cursor(total), "after write {n} of {size} bytes");
        let chunk = read_everything(&*store, id(1)).await;
        let kept = chunk.bytes();
        assert_eq!(
            chunk.skipped + kept.len() as u64,
            total,
            "after write {n} of {size} bytes: skipped {} + kept {} must be every byte",
            chunk.skipped,
            kept.len()
        );
        assert!(
            kept.len() <= cap,
            "after write {n}: kept {} over the cap",
            kept.len()
        );
        assert!(
            kept.len() >= (cap / 2).min(written.len()),
            "after write {n}: kept only {} bytes",
            kept.len()
        );
        assert!(
            written.ends_with(&kept),
            "after write {n} of {size} bytes: the kept bytes are not the newest"
        );
        assert_eq!(chunk.next, Cursor(total));
    }
}

/// A buffer handed over is kept as `append` keeps it, in order with
/// borrowed appends, and comes back whole: its bytes and its capacity.
pub async fn owned_appends_keep_order_and_return_the_buffer(store: Arc<dyn OutputStore>) {
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(b"one\n");
    let (back, end) = store.append_owned(id(1), Stream::Stdout, buf).await;
    assert_eq!(end.expect("append"), Cursor(4));
    assert_eq!(back, b"one\n");
    assert!(back.capacity() >= 64, "the buffer's capacity comes back");
    store
        .append(id(1), Stream::Stderr, b"two\n")
        .await
        .expect("append");
    let (_, end) = store
        .append_owned(id(1), Stream::Stdout, b"three\n".to_vec())
        .await;
    assert_eq!(end.expect("append"), Cursor(14));
    let chunk = store.read(id(1), &query(None)).await.expect("read");
    assert_eq!(chunk.text(), "one\ntwo\nthree\n");
    let streams: Vec<Stream> = chunk.pieces.iter().map(|p| p.stream).collect();
    assert_eq!(streams, [Stream::Stdout, Stream::Stderr, Stream::Stdout]);
}

/// A process that wrote nothing reads as empty, at cursor 0.
pub async fn unknown_process_reads_empty(store: Arc<dyn OutputStore>) {
    let chunk = store.read(id(9), &query(None)).await.expect("read");
    assert!(chunk.pieces.is_empty());
    assert_eq!(chunk.next, Cursor(0));
    assert!(
        store
            .tail(id(9), StreamSelect::Both, 5, usize::MAX)
            .await
            .expect("tail")
            .pieces
            .is_empty()
    );
}

/// Removed output is gone; removing twice is fine; other processes keep theirs.
pub async fn remove_forgets(store: Arc<dyn OutputStore>) {
    store
        .append(id(1), Stream::Stdout, b"gone")
        .await
        .expect("append");
    store
        .append(id(2), Stream::Stdout, b"kept")
        .await
        .expect("append");
    store.remove(id(1)).await.expect("remove");
    store.remove(id(1)).await.expect("remove twice");
    assert!(
        store
            .read(id(1), &query(None))
            .await
            .expect("read")
            .pieces
            .is_empty()
    );
    assert_eq!(
        store.read(id(2), &query(None)).await.expect("read").text(),
        "kept"
    );
}
