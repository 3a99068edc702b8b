//! The last lines of output, shared by the output stores.

use bpm_ports::OutputPiece;

/// The last `lines` lines of `pieces` (in write order), as pieces; and whether
/// the cut was found (`false`: fewer lines than asked, everything returned).
/// A newline that ends the output closes the last line rather than starting one.
pub fn last_lines(pieces: &[&OutputPiece], lines: usize) -> (Vec<OutputPiece>, bool) {
    if lines == 0 {
        return (Vec::new(), true);
    }
    let mut cut: Option<(usize, usize)> = None;
    let mut seen = 0;
    let mut last_byte = true;
    'outer: for (pi, piece) in pieces.iter().enumerate().rev() {
        for (bi, &b) in piece.data.iter().enumerate().rev() {
            if b == b'\n' && !last_byte {
                seen += 1;
                if seen == lines {
                    cut = Some((pi, bi + 1));
                    break 'outer;
                }
            }
            last_byte = false;
        }
    }
    let found = cut.is_some();
    let (first_piece, first_byte) = cut.unwrap_or((0, 0));
    let mut out = Vec::new();
    for (pi, piece) in pieces.iter().enumerate().skip(first_piece) {
        let skip = if pi == first_piece { first_byte } else { 0 };
        if skip < piece.data.len() {
            out.push(OutputPiece {
                stream: piece.stream,
                offset: piece.offset + skip as u64,
                data: piece.data[skip..].to_vec(),
            });
        }
    }
    (out, found)
}

/// How many bytes `pieces` hold.
pub fn bytes(pieces: &[OutputPiece]) -> usize {
    pieces.iter().map(|p| p.data.len()).sum()
}

/// Keeps only the newest `max_bytes` of `pieces` (in write order); returns
/// whether anything was cut.
pub fn keep_newest(pieces: &mut Vec<OutputPiece>, max_bytes: usize) -> bool {
    let mut over = bytes(pieces).saturating_sub(max_bytes);
    if over == 0 {
        return false;
    }
    let mut whole = 0;
    while let Some(p) = pieces.get(whole)
        && p.data.len() <= over
    {
        over -= p.data.len();
        whole += 1;
    }
    pieces.drain(..whole);
    if over > 0
        && let Some(first) = pieces.first_mut()
    {
        first.data.drain(..over);
        first.offset += over as u64;
    }
    true
}
