//! A file read in pieces on every core: cut at record ends, parsed while the next piece is
//! read, and handed on in file order.

use super::*;

/// The work done on each piece: (piece index, its bytes, whether it is the last) to a result,
/// or None to give up.
pub(super) type PieceWork<'a, T> = dyn Fn(usize, &[u8], bool) -> Result<Option<T>> + Sync + 'a;

/// Pieces done out of order, waiting for those before them.
pub(super) struct InOrder<T, D> {
    pub(super) next: usize,
    pub(super) waiting: std::collections::BTreeMap<usize, T>,
    pub(super) deliver: D,
}

/// Read `path` in pieces and run `work` (piece index, bytes, is last) on every core while the
/// next pieces are read; each result goes to `deliver` in the file's order, as soon as the
/// pieces before it are delivered. Reading stops at the first piece whose work gives up
/// (`None`) or fails, or whose delivery fails: the earliest such piece decides the outcome
/// (`Ok(false)`: gave up). Reading is bounded: it never runs more than a piece per core ahead.
pub(super) fn for_each_piece<T: Send>(
    path: &Path,
    mut pieces: PieceReader,
    first: Vec<u8>,
    progress: &dyn LoadProgress,
    work: &PieceWork<T>,
    deliver: &mut (dyn FnMut(T) -> Result<()> + Send),
) -> Result<bool> {
    let workers = crate::parallel::cores();
    let (send, receive) = std::sync::mpsc::sync_channel::<(usize, Vec<u8>, bool)>(workers);
    let receive = std::sync::Mutex::new(receive);
    use std::sync::atomic::Ordering::Relaxed;
    let gave_up = std::sync::atomic::AtomicBool::new(false);
    // The earliest piece that gave up or failed: the pieces after it need no work, those before
    // it still do (one of them may fail first).
    let failed_at = std::sync::atomic::AtomicUsize::new(usize::MAX);
    let panicked = std::sync::Mutex::new(None);
    // The earliest piece that gave up (None) or failed.
    let failure: std::sync::Mutex<Option<(usize, Option<Error>)>> = std::sync::Mutex::new(None);
    let fail = |index: usize, error: Option<Error>| {
        gave_up.store(true, Relaxed);
        failed_at.fetch_min(index, Relaxed);
        let mut failure = failure.lock().unwrap_or_else(|p| p.into_inner());
        if failure.as_ref().is_none_or(|(at, _)| index < *at) {
            *failure = Some((index, error));
        }
    };
    let in_order = std::sync::Mutex::new(InOrder {
        next: 0,
        waiting: std::collections::BTreeMap::new(),
        deliver,
    });
    // Pieces read but not yet delivered are at most this many: a piece slow to parse holds the
    // reading back, rather than every later piece's results piling up behind it.
    let ahead = 2 * workers;
    let delivered = std::sync::Condvar::new();
    let mut read_error = None;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let (receive, gave_up, failed_at, panicked, fail, in_order, delivered) = (
                    &receive, &gave_up, &failed_at, &panicked, &fail, &in_order, &delivered,
                );
                scope.spawn(move || {
                    loop {
                        let job = receive.lock().expect("no worker panics holding it").recv();
                        let Ok((index, bytes, last)) = job else { break };
                        if index > failed_at.load(Relaxed) || panicked_yet(panicked) {
                            continue;
                        }
                        // A panic (a bug) must not leave the reader waiting on a full
                        // channel no one drains: it stops the reading, and is raised again
                        // once every thread has finished.
                        let outcome =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                let outcome = work(index, &bytes, last);
                                drop(bytes);
                                let done = match outcome {
                                    Ok(Some(done)) => done,
                                    Ok(None) => return fail(index, None),
                                    Err(e) => return fail(index, Some(e)),
                                };
                                let mut queue = in_order.lock().unwrap_or_else(|p| p.into_inner());
                                queue.waiting.insert(index, done);
                                while let Some(done) = {
                                    let next = queue.next;
                                    queue.waiting.remove(&next)
                                } {
                                    let at = queue.next;
                                    queue.next += 1;
                                    delivered.notify_all();
                                    if let Err(e) = (queue.deliver)(done) {
                                        return fail(at, Some(e));
                                    }
                                }
                            }));
                        if let Err(panic) = outcome {
                            gave_up.store(true, Relaxed);
                            *panicked.lock().unwrap_or_else(|p| p.into_inner()) = Some(panic);
                        }
                    }
                })
            })
            .collect();
        let mut next = Some(first);
        let mut index = 0;
        while let Some(bytes) = next.take() {
            progress.bytes_read(bytes.len() as u64);
            // Wait for the pieces before to be delivered; woken by each delivery (and every
            // few milliseconds, so that a give-up is seen).
            let mut queue = in_order.lock().unwrap_or_else(|p| p.into_inner());
            while index >= queue.next + ahead && !gave_up.load(Relaxed) {
                queue = delivered
                    .wait_timeout(queue, std::time::Duration::from_millis(20))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            drop(queue);
            if gave_up.load(Relaxed) || send.send((index, bytes, pieces.finished)).is_err() {
                break;
            }
            index += 1;
            match pieces.next_piece() {
                Ok(piece) => next = piece,
                Err(e) => read_error = Some(e),
            }
        }
        drop(send);
        for handle in handles {
            handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        }
    });
    if let Some(panic) = panicked.into_inner().unwrap_or_else(|p| p.into_inner()) {
        std::panic::resume_unwind(panic);
    }
    if let Some(e) = read_error {
        return Err(Error::io(path, e));
    }
    match failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        None => Ok(true),
        Some((_, None)) => Ok(false),
        Some((_, Some(e))) => Err(e),
    }
}

/// Whether a worker panicked: the others stop working.
pub(super) fn panicked_yet<P>(panicked: &std::sync::Mutex<Option<P>>) -> bool {
    panicked.lock().unwrap_or_else(|p| p.into_inner()).is_some()
}

/// Read, parse and type the file in pieces; None when the file needs [`read_in_one_piece`].
pub(super) fn read_streaming(
    path: &Path,
    options: &SourceOptions,
    piece_bytes: usize,
    step: &dyn Fn(&str),
    progress: &dyn LoadProgress,
) -> Result<Option<FileRead>> {
    let Some(opened) = open_in_pieces(path, options, piece_bytes)? else {
        return Ok(None);
    };
    let Opened {
        pieces,
        first,
        names,
        parser,
    } = opened;
    let mut batches = Vec::new();
    let mut guesses = Vec::new();
    let mut cell_errors = Vec::new();
    let mut rows = 0;
    let complete = for_each_piece(
        path,
        pieces,
        first,
        progress,
        &|index, bytes, last| {
            // The batches are kept until the whole file is read: each at the size of its text.
            let parsed = parser.parse(options, bytes, index == 0, last)?;
            Ok(parsed.map(|mut piece| {
                piece.batches = piece.batches.iter().map(compact_text).collect();
                piece
            }))
        },
        &mut |piece: ParsedPiece| {
            guesses.extend(piece.guesses);
            cell_errors.extend(piece.cell_errors.into_iter().map(|mut e| {
                e.row += rows;
                e
            }));
            rows += piece.batches.iter().map(|b| b.num_rows()).sum::<usize>();
            batches.extend(piece.batches);
            Ok(())
        },
    )?;
    if !complete {
        return Ok(None);
    }
    step("parsed");
    let read = finish_typing(
        path,
        options,
        &parser.text_schema,
        batches,
        Some(guesses),
        cell_errors,
    )?;
    step("typed");
    warn_if_other_delimiter(path, options.delimiter, &names);
    Ok(Some(read))
}

/// Stream a CSV file's pieces (of about `piece_bytes`, by default 16 MB): `work` gets each
/// piece parsed (declared columns typed, the
/// others text with their guesses) on every core while the next are read, and `deliver` its
/// results in the file's order (see [`for_each_piece`]). Returns the column names, or None
/// when the file is not read in pieces (it needs the careful path, which names its problem)
/// or some piece's work gave up.
pub fn stream_csv_pieces<T: Send>(
    path: &Path,
    options: &SourceOptions,
    piece_bytes: Option<usize>,
    progress: &dyn LoadProgress,
    prepare: &mut dyn FnMut(&[String]) -> Result<bool>,
    work: &(dyn Fn(ParsedPiece) -> Result<Option<T>> + Sync),
    deliver: &mut (dyn FnMut(T) -> Result<()> + Send),
) -> Result<Option<Vec<String>>> {
    let piece_bytes = piece_bytes.unwrap_or(PIECE_BYTES);
    let Some(opened) = open_in_pieces(path, options, piece_bytes)? else {
        return Ok(None);
    };
    if !prepare(&opened.names)? {
        return Ok(None);
    }
    let Opened {
        pieces,
        first,
        names,
        parser,
    } = opened;
    let complete = for_each_piece(
        path,
        pieces,
        first,
        progress,
        &|index, bytes, last| match parser.parse(options, bytes, index == 0, last)? {
            Some(piece) => work(piece),
            None => Ok(None),
        },
        deliver,
    )?;
    warn_if_other_delimiter(path, options.delimiter, &names);
    Ok(complete.then_some(names))
}

/// `batch` with each text column whose values buffer is mostly empty copied into one of its
/// exact size. The reader grows a column's buffer by doubling, which leaves up to half of it
/// unused; a snapshot held in memory is then no larger than its text. (Shrinking in place does
/// not return the memory: the allocator keeps a block that shrinks by less than half.)
pub(super) fn compact_text(batch: &RecordBatch) -> RecordBatch {
    let columns = batch
        .columns()
        .iter()
        .map(|column| {
            let Some(strings) = column.as_string_opt::<i32>() else {
                return column.clone();
            };
            let used = strings
                .value_offsets()
                .last()
                .map_or(0, |&end| end as usize);
            let values = strings.values();
            if values.capacity() <= used + used / 8 + (64 << 10) {
                return column.clone();
            }
            let exact = Buffer::from_slice_ref(&values.as_slice()[..used]);
            // The same offsets over the same bytes: valid whenever the original was.
            StringArray::try_new(strings.offsets().clone(), exact, strings.nulls().cloned())
                .map_or_else(|_| column.clone(), |a| Arc::new(a) as ArrayRef)
        })
        .collect();
    RecordBatch::try_new(batch.schema(), columns).unwrap_or_else(|_| batch.clone())
}

/// The size of a file's pieces, at most `largest`, such that every core gets as many: the
/// cores finish together instead of one parsing the last piece alone while the others wait
/// (at 1M rows, 0.06–0.08 s of a 0.7 s parse). Pieces end at the record before their size, so each
/// is given room for a record more, lest the bytes they leave make a tiny piece at the end.
pub(super) fn even_pieces(file_size: u64, largest: usize, cores: usize) -> usize {
    let (size, largest, cores) = (file_size as usize, largest.max(1), cores.max(1));
    let rounds = size.div_ceil(largest * cores).max(1);
    let even = size.div_ceil(rounds * cores);
    (even + (even / 16).min(64 << 10)).clamp(1, largest)
}

/// Reads a file in pieces of about `piece_bytes` that end after a line break outside quotes
/// (judged by the parity of the quotes before it; the parser checks it), so that each piece
/// holds whole records.
pub(super) struct PieceReader {
    pub(super) file: std::fs::File,
    pub(super) piece_bytes: usize,
    /// The start of the next piece: bytes read after the last piece's end.
    pub(super) carry: Vec<u8>,
    /// Every byte of the file has been handed out.
    pub(super) finished: bool,
}

impl PieceReader {
    pub(super) fn new(file: std::fs::File, piece_bytes: usize) -> Self {
        PieceReader {
            file,
            piece_bytes: piece_bytes.max(1),
            carry: Vec::new(),
            finished: false,
        }
    }

    pub(super) fn next_piece(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        use std::io::Read;
        if self.finished {
            return Ok(None);
        }
        let mut piece = std::mem::take(&mut self.carry);
        let mut wanted = self.piece_bytes.max(piece.len() + 1);
        loop {
            let more = wanted - piece.len();
            piece.reserve_exact(more);
            let got = (&mut self.file).take(more as u64).read_to_end(&mut piece)?;
            if got < more {
                self.finished = true;
                return Ok((!piece.is_empty()).then_some(piece));
            }
            if let Some(end) = last_record_end(&piece) {
                self.carry = piece[end..].to_vec();
                piece.truncate(end);
                return Ok(Some(piece));
            }
            // One record longer than a piece: read on.
            wanted = piece.len() * 2;
        }
    }
}

/// The end of the last line break that has an even number of quotes before it, if any.
pub(super) fn last_record_end(bytes: &[u8]) -> Option<usize> {
    let quotes = bytes.iter().filter(|&&b| b == b'"').count();
    let mut quotes_after = 0;
    for (i, &b) in bytes.iter().enumerate().rev() {
        match b {
            b'"' => quotes_after += 1,
            b'\n' if (quotes - quotes_after) % 2 == 0 => return Some(i + 1),
            _ => {}
        }
    }
    None
}
