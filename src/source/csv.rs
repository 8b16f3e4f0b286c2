//! CSV: every field is read as text by arrow-csv (quotes, embedded delimiters and newlines,
//! UTF-8), then declared columns are parsed to their type and the others inferred as whole
//! columns, so that codes like `0123` never silently lose their leading zero.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::csv::reader::{Decoder, Format, ReaderBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use super::types::{Guess, guess_types, parse_declared, type_text_batches};
use super::{CellError, FileRead, FileRows, LoadProgress, SourceOptions};
use crate::error::{Error, Result};

/// Bytes of a CSV file read and parsed as one piece: large enough that the per-piece costs
/// vanish, small enough that the file's raw text never sits in memory whole.
const PIECE_BYTES: usize = 16 << 20;

/// Read a CSV file into typed record batches, reporting the cells that do not fit their
/// declared type (they are null in the batches).
///
/// The file is read in pieces that end between records, parsed on every core while the next
/// pieces are read, and its declared columns typed piece by piece; the undeclared columns are
/// inferred over the whole file at the end. Anything unusual (a split that is not between
/// records, bytes that are not UTF-8, a malformed line) sends the file through
/// [`read_in_one_piece`], which finds the problem and names its line.
pub fn read_csv_rows(
    path: &Path,
    options: &SourceOptions,
    progress: &dyn LoadProgress,
) -> Result<FileRead> {
    read_csv_rows_in_pieces(path, options, PIECE_BYTES, progress)
}

/// [`read_csv_rows`] with pieces of about `piece_bytes`: tests and the fuzzer compare it, with
/// tiny pieces, against [`read_csv_in_one_piece`].
pub fn read_csv_rows_in_pieces(
    path: &Path,
    options: &SourceOptions,
    piece_bytes: usize,
    progress: &dyn LoadProgress,
) -> Result<FileRead> {
    let clock = std::time::Instant::now();
    let step = |what: &str| {
        tracing::debug!(
            "{}: {what} ({:.2} s)",
            path.display(),
            clock.elapsed().as_secs_f64()
        )
    };
    match read_streaming(path, options, piece_bytes, &step, progress)? {
        Some(read) => Ok(read),
        None => {
            step("read again in one piece, to find the problem");
            read_in_one_piece(path, options, &step)
        }
    }
}

/// A piece of a CSV file parsed: its batches (declared columns typed), each batch's guesses
/// for its other columns, and the cells that did not fit, by row of the piece.
pub struct ParsedPiece {
    /// The piece's rows, undeclared columns as text.
    pub batches: Vec<RecordBatch>,
    /// Per batch, per column: the type its values alone suggest, with the values parsed.
    pub guesses: Vec<Vec<Guess>>,
    /// Cells of declared columns that did not fit, by row of the piece.
    pub cell_errors: Vec<CellError>,
}

/// A CSV file opened to be read in pieces: the header is read, the first piece waits.
struct Opened {
    pieces: PieceReader,
    first: Vec<u8>,
    names: Vec<String>,
    parser: PieceParser,
}

/// What parsing a piece needs to know of its file.
struct PieceParser {
    text_schema: SchemaRef,
    nulls: Option<regex::Regex>,
    /// Decoders of pieces done, kept for the next: a decoder's record buffers grow to a
    /// batch's size, and a new one for every piece would reallocate them (copying as they
    /// double) and have the kernel zero fresh pages for them again.
    idle_decoders: std::sync::Mutex<Vec<Decoder>>,
}

/// Open `path` to be read in pieces; None when the file needs [`read_in_one_piece`] (no
/// header, not text, a header that is not plain).
fn open_in_pieces(
    path: &Path,
    options: &SourceOptions,
    piece_bytes: usize,
) -> Result<Option<Opened>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let size = file.metadata().map_or(0, |m| m.len());
    let piece_bytes = even_pieces(size, piece_bytes, crate::parallel::cores());
    let mut pieces = PieceReader::new(file, piece_bytes);
    let Some(mut first) = pieces.next_piece().map_err(|e| Error::io(path, e))? else {
        return Ok(None);
    };
    let bom = if first.starts_with(b"\xEF\xBB\xBF") {
        3
    } else {
        0
    };
    if not_text(&first[bom..]).is_some() {
        return Ok(None);
    }
    let skip = options.header_row.saturating_sub(1);
    let Some(start) = offset_after_lines(&first[bom..], skip) else {
        return Ok(None);
    };
    first.drain(..bom + start);
    if pieces.finished && first.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(None);
    }
    let Ok(names) = header_names(&first, options.delimiter) else {
        return Ok(None);
    };
    if check_header(path, options.header_row, &names).is_err() {
        return Ok(None);
    }
    Ok(Some(Opened {
        pieces,
        first,
        parser: PieceParser {
            text_schema: text_schema(&names),
            nulls: null_regex(&options.null_values),
            idle_decoders: std::sync::Mutex::new(Vec::new()),
        },
        names,
    }))
}

impl PieceParser {
    /// Parse one piece (the first holds the header): None when it does not end between
    /// records, is not UTF-8 or does not parse, so that the careful path names the problem.
    fn parse(
        &self,
        options: &SourceOptions,
        bytes: &[u8],
        header: bool,
        last: bool,
    ) -> Result<Option<ParsedPiece>> {
        // Checked whole: arrow-csv checks only a batch's fields joined, where two halves of
        // a character in neighbouring fields would pass.
        if std::str::from_utf8(bytes).is_err() {
            return Ok(None);
        }
        // A piece must end between records (the last one: not inside quotes); else the split
        // was misled by a stray quote, or a quote is never closed.
        let state = end_state(bytes, options.delimiter);
        if state == QuoteState::Quoted || (!last && state != QuoteState::FieldStart) {
            return Ok(None);
        }
        let Some(text) = self.decode_text(bytes, header, last, options.delimiter) else {
            return Ok(None);
        };
        let mut batches = Vec::with_capacity(text.len());
        let mut guesses = Vec::with_capacity(text.len());
        let mut cell_errors = Vec::new();
        let mut rows = 0;
        for batch in &text {
            let (typed, misfits) = parse_declared(batch, &options.columns)?;
            cell_errors.extend(misfits.into_iter().map(|mut e| {
                e.row += rows;
                e
            }));
            rows += typed.num_rows();
            guesses.push(guess_types(&typed, &options.columns));
            batches.push(typed);
        }
        Ok(Some(ParsedPiece {
            batches,
            guesses,
            cell_errors,
        }))
    }

    /// The piece's records as text batches, by a decoder of the pieces before when one is
    /// idle (the first piece, which holds the header, gets a new one); None when the piece
    /// does not decode.
    fn decode_text(
        &self,
        bytes: &[u8],
        header: bool,
        last: bool,
        delimiter: u8,
    ) -> Option<Vec<RecordBatch>> {
        let idle = (!header)
            .then(|| self.idle_decoders.lock().ok()?.pop())
            .flatten();
        let mut decoder = idle.unwrap_or_else(|| {
            text_reader(&self.text_schema, header, delimiter, &self.nulls).build_decoder()
        });
        let mut batches = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let used = decoder.decode(rest).ok()?;
            rest = &rest[used..];
            if decoder.capacity() == 0 {
                batches.extend(decoder.flush().ok()?);
            } else if used == 0 {
                return None;
            }
        }
        if last {
            // An empty input ends the last record, which may lack its line break. csv-core
            // then takes its input as ended for good, so this decoder is not kept.
            decoder.decode(&[]).ok()?;
        }
        batches.extend(decoder.flush().ok()?);
        if !last && let Ok(mut idle) = self.idle_decoders.lock() {
            idle.push(decoder);
        }
        Some(batches)
    }
}

/// A reader of text columns, by arrow-csv: every field a string, nulls as `nulls` says.
fn text_reader(
    text_schema: &SchemaRef,
    header: bool,
    delimiter: u8,
    nulls: &Option<regex::Regex>,
) -> ReaderBuilder {
    let mut builder = ReaderBuilder::new(text_schema.clone())
        .with_header(header)
        .with_delimiter(delimiter)
        .with_batch_size(64 * 1024);
    if let Some(nulls) = nulls {
        builder = builder.with_null_regex(nulls.clone());
    }
    builder
}

/// The work done on each piece: (piece index, its bytes, whether it is the last) to a result,
/// or None to give up.
type PieceWork<'a, T> = dyn Fn(usize, &[u8], bool) -> Result<Option<T>> + Sync + 'a;

/// Pieces done out of order, waiting for those before them.
struct InOrder<T, D> {
    next: usize,
    waiting: std::collections::BTreeMap<usize, T>,
    deliver: D,
}

/// Read `path` in pieces and run `work` (piece index, bytes, is last) on every core while the
/// next pieces are read; each result goes to `deliver` in the file's order, as soon as the
/// pieces before it are delivered. Reading stops at the first piece whose work gives up
/// (`None`) or fails, or whose delivery fails: the earliest such piece decides the outcome
/// (`Ok(false)`: gave up). Reading is bounded: it never runs more than a piece per core ahead.
fn for_each_piece<T: Send>(
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
fn panicked_yet<P>(panicked: &std::sync::Mutex<Option<P>>) -> bool {
    panicked.lock().unwrap_or_else(|p| p.into_inner()).is_some()
}

/// Read, parse and type the file in pieces; None when the file needs [`read_in_one_piece`].
fn read_streaming(
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
fn compact_text(batch: &RecordBatch) -> RecordBatch {
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
fn even_pieces(file_size: u64, largest: usize, cores: usize) -> usize {
    let (size, largest, cores) = (file_size as usize, largest.max(1), cores.max(1));
    let rounds = size.div_ceil(largest * cores).max(1);
    let even = size.div_ceil(rounds * cores);
    (even + (even / 16).min(64 << 10)).clamp(1, largest)
}

/// Reads a file in pieces of about `piece_bytes` that end after a line break outside quotes
/// (judged by the parity of the quotes before it; the parser checks it), so that each piece
/// holds whole records.
struct PieceReader {
    file: std::fs::File,
    piece_bytes: usize,
    /// The start of the next piece: bytes read after the last piece's end.
    carry: Vec<u8>,
    /// Every byte of the file has been handed out.
    finished: bool,
}

impl PieceReader {
    fn new(file: std::fs::File, piece_bytes: usize) -> Self {
        PieceReader {
            file,
            piece_bytes: piece_bytes.max(1),
            carry: Vec::new(),
            finished: false,
        }
    }

    fn next_piece(&mut self) -> std::io::Result<Option<Vec<u8>>> {
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
fn last_record_end(bytes: &[u8]) -> Option<usize> {
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

/// The column names of the header record at the start of `body`. An empty header cell gets
/// `column_N` after its position, as in a workbook (see excel.rs), rather than an empty name
/// that no SQL can select.
fn header_names(body: &[u8], delimiter: u8) -> std::result::Result<Vec<String>, String> {
    let format = Format::default()
        .with_header(true)
        .with_delimiter(delimiter);
    let (inferred, _) = format
        .infer_schema(body, Some(1))
        .map_err(|e| e.to_string())?;
    Ok(inferred
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if f.name().is_empty() {
                format!("column_{}", i + 1)
            } else {
                f.name().clone()
            }
        })
        .collect())
}

/// Every column as nullable text.
fn text_schema(names: &[String]) -> SchemaRef {
    Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(n, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ))
}

/// Parse CSV records (after the header when `header`) into batches of text columns.
fn parse_text(
    bytes: &[u8],
    header: bool,
    text_schema: &SchemaRef,
    delimiter: u8,
    nulls: &Option<regex::Regex>,
) -> std::result::Result<Vec<RecordBatch>, String> {
    let reader = text_reader(text_schema, header, delimiter, nulls)
        .build(bytes)
        .map_err(|e| e.to_string())?;
    reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

/// Type the file's batches (see [`type_text_batches`]); a file of no rows is one empty batch,
/// which carries the columns.
fn finish_typing(
    path: &Path,
    options: &SourceOptions,
    text_schema: &SchemaRef,
    mut batches: Vec<RecordBatch>,
    guesses: Option<Vec<Vec<Guess>>>,
    mut cell_errors: Vec<CellError>,
) -> Result<FileRead> {
    if batches.is_empty() {
        batches.push(RecordBatch::new_empty(text_schema.clone()));
    }
    let guesses = guesses.filter(|g| g.len() == batches.len());
    let (batches, mut more_errors) = type_text_batches(&batches, &options.columns, guesses)?;
    cell_errors.append(&mut more_errors);
    // Column by column, as a person reads the rejects of one row.
    cell_errors.sort_by_key(|e| (text_schema.index_of(&e.column).unwrap_or(usize::MAX), e.row));
    Ok(FileRead {
        batches,
        rows: FileRows::CsvLines {
            path: path.to_path_buf(),
            header_row: options.header_row,
        },
        cell_errors,
    })
}

/// The careful path alone (see [`read_in_one_piece`]): what reading in pieces must agree with.
pub fn read_csv_in_one_piece(path: &Path, options: &SourceOptions) -> Result<FileRead> {
    read_in_one_piece(path, options, &|_| {})
}

/// Read the whole file into memory, check it and parse it in one piece: the careful path,
/// whose errors name the file's line.
fn read_in_one_piece(
    path: &Path,
    options: &SourceOptions,
    step: &dyn Fn(&str),
) -> Result<FileRead> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    step("read");
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let skip = options.header_row.saturating_sub(1);
    let start = offset_after_lines(bytes, skip).ok_or_else(|| Error::SourceData {
        path: path.to_path_buf(),
        row: None,
        column: None,
        message: format!(
            "`header_row: {}` is beyond the end of the file, which has fewer lines. Check `header_row`.",
            options.header_row
        ),
    })?;
    let body = &bytes[start..];
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(Error::SourceEmpty {
            path: path.to_path_buf(),
        });
    }
    // A workbook, a Parquet file or other binary data under a .csv name would otherwise be
    // reported as "not valid UTF-8 (is it Latin-1?)", which sends the user the wrong way.
    if let Some(what) = not_text(bytes) {
        return Err(Error::SourceData {
            path: path.to_path_buf(),
            row: None,
            column: None,
            message: format!("the file is not a CSV text file: {what}."),
        });
    }
    if let Err(e) = std::str::from_utf8(body) {
        let line = 1
            + skip
            + body[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
        return Err(Error::SourceData {
            path: path.to_path_buf(),
            row: Some(line as u64),
            column: None,
            message: "the file is not valid UTF-8 (is it Latin-1 or Windows-1252?). Re-export it as UTF-8.".into(),
        });
    }

    // arrow-csv ends a quoted field that is never closed at the end of the file, silently
    // reading every later line into one value; refuse it, naming the line the quote opens on.
    if let Some(line) = unclosed_quote(body, options.delimiter) {
        return Err(Error::SourceData {
            path: path.to_path_buf(),
            row: Some((skip + line) as u64),
            column: None,
            message: "malformed CSV: the quote that opens a field on this line is never closed, so the rest of the file would be read as one value. Add the closing quote; a quote inside a quoted value is written twice (\"\").".into(),
        });
    }
    step("checked");
    let names = header_names(body, options.delimiter)
        .map_err(|e| data_error(path, options.header_row, &e))?;
    check_header(path, options.header_row, &names)?;
    warn_if_other_delimiter(path, options.delimiter, &names);
    let text_schema = text_schema(&names);
    let nulls = null_regex(&options.null_values);
    let batches = parse_text(body, true, &text_schema, options.delimiter, &nulls)
        .map_err(|e| data_error(path, options.header_row, &e))?;
    step("parsed");
    let read = finish_typing(path, options, &text_schema, batches, None, Vec::new())?;
    step("typed");
    Ok(read)
}

/// Byte offset just after the first `lines` lines, or None when the file has fewer.
fn offset_after_lines(bytes: &[u8], lines: usize) -> Option<usize> {
    let mut offset = 0;
    for _ in 0..lines {
        let newline = bytes[offset..].iter().position(|&b| b == b'\n')?;
        offset += newline + 1;
    }
    Some(offset)
}

/// The regex of the cell texts read as null; None for the default (only the empty text), which
/// the reader checks without a regex for every field.
fn null_regex(null_values: &[String]) -> Option<regex::Regex> {
    if null_values == [""] {
        return None;
    }
    let pattern = if null_values.is_empty() {
        // Matches nothing: every field is a value, "" included.
        r"\A\b\B\z".to_string()
    } else {
        let alternatives: Vec<String> = null_values.iter().map(|v| regex::escape(v)).collect();
        format!("^(?:{})$", alternatives.join("|"))
    };
    Some(regex::Regex::new(&pattern).expect("escaped literals form a valid regex"))
}

fn check_header(path: &Path, header_row: usize, names: &[String]) -> Result<()> {
    for (i, name) in names.iter().enumerate() {
        if let Some(j) = names[..i].iter().position(|n| n == name) {
            return Err(Error::SourceData {
                path: path.to_path_buf(),
                row: Some(header_row as u64),
                column: Some(name.clone()),
                message: format!(
                    "the header names column \"{name}\" twice (columns {} and {}). Rename one in the file.",
                    j + 1,
                    i + 1
                ),
            });
        }
    }
    Ok(())
}

/// What a file that is not text is, judging by its first bytes, or None for text.
fn not_text(bytes: &[u8]) -> Option<&'static str> {
    let head = &bytes[..bytes.len().min(8192)];
    let real_format = if head.starts_with(b"PK\x03\x04") {
        "it is a ZIP file, such as an Excel workbook (.xlsx); if it is one, set `format: excel`"
    } else if head.starts_with(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]) {
        "it is an OLE2 file, such as a legacy Excel workbook (.xls); if it is one, set `format: excel`"
    } else if head.starts_with(b"PAR1") {
        "it is a Parquet file; set `format: parquet`"
    } else if head.starts_with(&[0xFF, 0xFE]) || head.starts_with(&[0xFE, 0xFF]) {
        "it is UTF-16 text (Excel's \"Unicode text\"); re-export it as UTF-8 CSV"
    } else if head.contains(&0) && std::str::from_utf8(head).is_err_and(|e| e.error_len().is_some())
    {
        "it holds binary data; check `source.path`, or set `format:` to the file's real format"
    } else {
        return None;
    };
    Some(real_format)
}

/// The 1-based line (counted from the start of `body`) on which a quoted field opens that is
/// never closed, if any. Follows the quoting arrow-csv applies: a quote opens a field only at
/// the start of a field, `""` inside it is a quote, and quotes inside unquoted fields are text.
fn unclosed_quote(body: &[u8], delimiter: u8) -> Option<usize> {
    // A closed quoted field holds an even number of quotes, so an odd total is needed for an
    // unclosed one (quotes inside unquoted fields aside); the common case costs one count.
    if body.iter().filter(|&&b| b == b'"').count() % 2 == 0 {
        return None;
    }
    let (state, opened_on) = scan_quotes(body, delimiter);
    (state == QuoteState::Quoted).then_some(opened_on)
}

/// Where a CSV scanner is after some bytes, as far as quoting goes.
#[derive(Debug, PartialEq, Eq)]
enum QuoteState {
    FieldStart,
    Unquoted,
    Quoted,
    QuoteInQuoted,
}

/// Scan `bytes` from the start of a record: the state at the end, and the line (from 1) on
/// which the last quoted field opened.
fn scan_quotes(bytes: &[u8], delimiter: u8) -> (QuoteState, usize) {
    let mut state = QuoteState::FieldStart;
    let mut line = 1;
    let mut opened_on = 1;
    for &b in bytes {
        state = match (state, b) {
            (QuoteState::Quoted, b'"') => QuoteState::QuoteInQuoted,
            (QuoteState::Quoted, _) => QuoteState::Quoted,
            (QuoteState::QuoteInQuoted, b'"') => QuoteState::Quoted,
            (QuoteState::FieldStart, b'"') => {
                opened_on = line;
                QuoteState::Quoted
            }
            // The reader ends a record at \n, \r\n and a lone \r alike.
            (_, b'\n' | b'\r') => QuoteState::FieldStart,
            (_, b) if b == delimiter => QuoteState::FieldStart,
            _ => QuoteState::Unquoted,
        };
        if b == b'\n' {
            line += 1;
        }
    }
    (state, opened_on)
}

/// The state [`scan_quotes`] ends in, found faster: by jumping from quote to quote, since only
/// quotes change it (a quote at the start of a field opens a quoted value, up to a quote not
/// followed by another).
fn end_state(bytes: &[u8], delimiter: u8) -> QuoteState {
    let mut at = 0;
    while let Some(quote) = memchr::memchr(b'"', &bytes[at..]).map(|k| at + k) {
        let opens = quote == 0
            || matches!(bytes[quote - 1], b'\n' | b'\r')
            || bytes[quote - 1] == delimiter;
        at = quote + 1;
        if !opens {
            continue;
        }
        loop {
            let Some(close) = memchr::memchr(b'"', &bytes[at..]).map(|k| at + k) else {
                return QuoteState::Quoted;
            };
            match bytes.get(close + 1) {
                None => return QuoteState::QuoteInQuoted,
                Some(b'"') => at = close + 2,
                Some(_) => {
                    at = close + 1;
                    break;
                }
            }
        }
    }
    match bytes.last() {
        None => QuoteState::FieldStart,
        Some(&b) if b == b'\n' || b == b'\r' || b == delimiter => QuoteState::FieldStart,
        Some(_) => QuoteState::Unquoted,
    }
}

/// A header of one column that holds another common delimiter: most likely a file separated by
/// that delimiter, read with the wrong one. The key then "does not exist"; say why.
fn warn_if_other_delimiter(path: &Path, delimiter: u8, names: &[String]) {
    let [name] = names else { return };
    let other = [b';', b'\t', b'|', b',']
        .into_iter()
        .find(|&d| d != delimiter && name.as_bytes().contains(&d));
    if let Some(d) = other {
        let written = if d == b'\t' {
            "\\t".to_string()
        } else {
            (d as char).to_string()
        };
        tracing::warn!(
            "{}: the header has a single column, \"{name}\"; if the file's fields are separated by \"{written}\", set `delimiter: \"{written}\"` in the table's source.",
            path.display()
        );
    }
}

/// arrow-csv's messages about a line: name the line as a person counts it in the file (the
/// reader counts records from the header, which differ from lines after a field that spans
/// lines) and say what is wrong in plain words.
fn data_error(path: &Path, header_row: usize, message: &str) -> Error {
    let skipped_lines = header_row.saturating_sub(1);
    let fields = |n: &str| {
        if n == "1" {
            "1 field".to_string()
        } else {
            format!("{n} fields")
        }
    };
    let what_to_do =
        "Check the delimiter (`delimiter`), quoting and the number of fields on that line.";
    // The reader: "incorrect number of fields for line N, expected E got G", N counting
    // records from the header (1).
    let reader =
        regex::Regex::new(r"incorrect number of fields for line (\d+), expected (\d+) got (\d+)")
            .expect("valid regex");
    // Schema inference (the csv crate): "... Expected E records, found G records at line N",
    // N counting lines from the header.
    let inference = regex::Regex::new(
        r"Expected (\d+) (?:records|fields), found (\d+) (?:records|fields) at line (\d+)",
    )
    .expect("valid regex");
    let (row, expected, got) = if let Some(c) = reader.captures(message) {
        let record: u64 = c[1].parse().unwrap_or(0);
        let index = record.saturating_sub(2);
        let row = record_line(path, header_row, index).unwrap_or(record + skipped_lines as u64);
        (row, c[2].to_string(), c[3].to_string())
    } else if let Some(c) = inference.captures(message) {
        let line: u64 = c[3].parse().unwrap_or(0);
        (
            line + skipped_lines as u64,
            c[1].to_string(),
            c[2].to_string(),
        )
    } else {
        let message = message.strip_prefix("Csv error: ").unwrap_or(message);
        return Error::SourceData {
            path: path.to_path_buf(),
            row: None,
            column: None,
            message: format!(
                "malformed CSV: {}. {what_to_do}",
                shift_line_numbers(message, skipped_lines)
            ),
        };
    };
    Error::SourceData {
        path: path.to_path_buf(),
        row: Some(row),
        column: None,
        message: format!(
            "malformed CSV: this line has {} where the header has {expected}. {what_to_do}",
            fields(&got)
        ),
    }
}

fn shift_line_numbers(message: &str, skipped_lines: usize) -> String {
    let re = regex::Regex::new(r"line (\d+)").expect("valid regex");
    re.replace_all(message, |caps: &regex::Captures<'_>| {
        let n: usize = caps[1].parse().unwrap_or(0);
        format!("line {}", n + skipped_lines)
    })
    .into_owned()
}

/// The line on which data record `index` (0-based) starts, as a person counts lines in the file,
/// for error messages.
pub fn record_line(path: &Path, header_row: usize, index: u64) -> Option<u64> {
    record_lines(path, header_row, &[index]).remove(0)
}

/// The lines on which data records `indexes` (0-based, any order) start. Quoted fields may span
/// lines, so records and lines differ; the file is read again only here, once for all indexes,
/// on the error and rejects path.
pub fn record_lines(path: &Path, header_row: usize, indexes: &[u64]) -> Vec<Option<u64>> {
    let mut found = vec![None; indexes.len()];
    let mut order: Vec<usize> = (0..indexes.len()).collect();
    order.sort_by_key(|&k| indexes[k]);
    let Ok(bytes) = std::fs::read(path) else {
        return found;
    };
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let Some(start) = offset_after_lines(bytes, header_row.saturating_sub(1)) else {
        return found;
    };
    let mut wanted = order.into_iter().peekable();
    // Scan from the header record (record 0 of the scan, on line `header_row`).
    let mut line = header_row as u64;
    let mut record = 0u64;
    let mut in_quotes = false;
    let mut at_record_start = false;
    for &b in &bytes[start..] {
        if at_record_start {
            while let Some(&k) = wanted.peek() {
                if indexes[k] + 1 == record {
                    found[k] = Some(line);
                    wanted.next();
                } else if indexes[k] + 1 < record {
                    wanted.next();
                } else {
                    break;
                }
            }
            if wanted.peek().is_none() {
                break;
            }
            at_record_start = false;
        }
        match b {
            b'"' => in_quotes = !in_quotes,
            b'\n' => {
                line += 1;
                if !in_quotes {
                    record += 1;
                    at_record_start = true;
                }
            }
            _ => {}
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_end_between_records_also_after_quoted_line_breaks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        let mut body = String::new();
        for i in 0..200 {
            body.push_str(&format!(
                "K{i},\"a \"\"quoted\"\"\nvalue, with a comma\",{i}\n"
            ));
        }
        std::fs::write(&path, &body).unwrap();
        for piece_bytes in [1, 50, 333, 4096] {
            let mut reader = PieceReader::new(std::fs::File::open(&path).unwrap(), piece_bytes);
            let mut parts = Vec::new();
            while let Some(part) = reader.next_piece().unwrap() {
                parts.push(part);
            }
            assert!(parts.len() > 1, "{piece_bytes}");
            assert_eq!(parts.concat(), body.as_bytes());
            for part in &parts {
                assert_eq!(scan_quotes(part, b',').0, QuoteState::FieldStart);
                assert!(std::str::from_utf8(part).unwrap().starts_with('K'));
            }
        }
    }

    #[test]
    fn every_core_gets_as_many_pieces() {
        let mb = 1 << 20;
        // 150 MB on 2 cores: 10 pieces of 15 MB (and a little room), not 9 of 16 and one of 6.
        assert_eq!(
            even_pieces(150 * mb as u64, 16 * mb, 2),
            15 * mb + (64 << 10)
        );
        // A file of less than a piece per core: one piece each.
        assert_eq!(even_pieces(10 * mb as u64, 16 * mb, 2), 5 * mb + (64 << 10));
        // Never above the largest size, nor below a byte.
        assert_eq!(even_pieces(32 * mb as u64, 16 * mb, 2), 16 * mb);
        assert_eq!(even_pieces(0, 16 * mb, 2), 1);
        assert_eq!(even_pieces(100, 4096, 1), 100 + 6);
    }

    /// What a file reads as: one batch of every row, the cell errors, and the error if any.
    fn read_as(path: &Path, options: &SourceOptions, piece_bytes: Option<usize>) -> String {
        let read = match piece_bytes {
            Some(bytes) => read_csv_rows_in_pieces(path, options, bytes, &super::super::Unobserved),
            None => read_in_one_piece(path, options, &|_| {}),
        };
        match read {
            Err(e) => format!("error: {e}"),
            Ok(read) => {
                let batch = datafusion::arrow::compute::concat_batches(
                    &read.batches[0].schema(),
                    &read.batches,
                )
                .unwrap();
                format!(
                    "{:?}\n{}\n{:?}",
                    batch.schema(),
                    datafusion::arrow::util::pretty::pretty_format_batches(&[batch]).unwrap(),
                    read.cell_errors
                )
            }
        }
    }

    #[test]
    fn a_file_read_in_pieces_reads_as_in_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.csv");
        let mut text = String::from("sku,note,qty,price,seen,flag\n");
        for i in 0..3000 {
            text.push_str(&format!(
                "S{i},\"line one\nline \"\"two\"\"\",{i},{}.5,2024-01-{:02} 10:00:00,{}\nT{i},plain,{},,,true\n",
                i % 7,
                1 + i % 28,
                i % 2 == 0,
                if i % 1000 == 999 { "12 pcs".to_string() } else { i.to_string() },
            ));
        }
        std::fs::write(&path, &text).unwrap();
        let options = SourceOptions {
            columns: vec![("qty".into(), DataType::Int64)],
            ..SourceOptions::default()
        };
        let whole = read_as(&path, &options, None);
        assert!(
            whole.contains("Timestamp(µs)") || whole.contains("Timestamp(Microsecond"),
            "{whole}"
        );
        assert!(whole.contains("12 pcs"), "{whole}");
        for piece_bytes in [100, 7_000, 64 << 10, PIECE_BYTES] {
            assert_eq!(
                read_as(&path, &options, Some(piece_bytes)),
                whole,
                "{piece_bytes}"
            );
        }
        // A value in a later piece that makes a column text makes it text in every piece.
        std::fs::write(
            &path,
            format!("{text}U1,x,1,not a number,2024-01-01,maybe\n"),
        )
        .unwrap();
        let whole = read_as(&path, &options, None);
        assert!(whole.contains("price\", data_type: Utf8"), "{whole}");
        assert_eq!(read_as(&path, &options, Some(7_000)), whole);
        // Whole numbers early and a fraction late: float64 throughout.
        let mut text = String::from("id,amount\n");
        for i in 0..2000 {
            text.push_str(&format!("{i},{i}\n"));
        }
        text.push_str("2000,7.25\n");
        std::fs::write(&path, &text).unwrap();
        let whole = read_as(&path, &SourceOptions::default(), None);
        assert!(whole.contains("amount\", data_type: Float64"), "{whole}");
        assert_eq!(read_as(&path, &SourceOptions::default(), Some(500)), whole);
        // Lines ended by CR LF, the last by nothing: each piece's decoder, kept for later
        // pieces, still ends where the piece ends.
        let text = text.replace('\n', "\r\n");
        std::fs::write(&path, text.trim_end()).unwrap();
        let whole = read_as(&path, &SourceOptions::default(), None);
        assert!(whole.contains("| 2000 | 7.25   |"), "{whole}");
        for piece_bytes in [7, 500, 4096] {
            let read = read_streaming(
                &path,
                &SourceOptions::default(),
                piece_bytes,
                &|_| {},
                &super::super::Unobserved,
            );
            assert!(read.unwrap().is_some(), "read in pieces of {piece_bytes}");
            assert_eq!(
                read_as(&path, &SourceOptions::default(), Some(piece_bytes)),
                whole,
                "{piece_bytes}"
            );
        }
    }

    #[test]
    fn files_that_mislead_the_split_or_are_malformed_read_as_in_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("odd.csv");
        let mut rows = String::from("id,size,note\n");
        for i in 0..500 {
            rows.push_str(&format!("{i},5\" pipe,\"a, b\"\n"));
        }
        let cases = [
            // Quotes inside unquoted fields make the quote parity lie.
            rows.clone(),
            // A line with a field too many, far into the file.
            format!("{rows}501,1,x,extra\n{rows}"),
            // A quote never closed.
            format!("{rows}502,\"open\n{rows}"),
            String::from("id,size\n"),
        ];
        for (n, case) in cases.iter().enumerate() {
            std::fs::write(&path, case).unwrap();
            let whole = read_as(&path, &SourceOptions::default(), None);
            for piece_bytes in [100, 5_000] {
                assert_eq!(
                    read_as(&path, &SourceOptions::default(), Some(piece_bytes)),
                    whole,
                    "case {n}, pieces of {piece_bytes}"
                );
            }
        }
        let mut latin1 = rows.into_bytes();
        latin1.extend_from_slice(b"504,caf\xe9,x\n");
        std::fs::write(&path, &latin1).unwrap();
        let whole = read_as(&path, &SourceOptions::default(), None);
        assert!(whole.contains("not valid UTF-8"), "{whole}");
        assert_eq!(read_as(&path, &SourceOptions::default(), Some(100)), whole);
    }

    proptest::proptest! {
        #[test]
        fn the_fast_end_state_is_the_scanned_one(text in "[a,\"\n\r]{0,40}") {
            let bytes = text.as_bytes();
            proptest::prop_assert_eq!(end_state(bytes, b','), scan_quotes(bytes, b',').0);
        }
    }

    #[test]
    fn record_lines_count_quoted_newlines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(
            &path,
            "title\nid,note\n1,\"two\nlines\"\n2,x\n3,\"a \"\"q\"\"\"\n4,y\n",
        )
        .unwrap();
        let lines: Vec<_> = (0..4).map(|i| record_line(&path, 2, i)).collect();
        assert_eq!(lines, [Some(3), Some(5), Some(6), Some(7)]);
    }

    #[test]
    fn an_unclosed_quote_is_found_on_the_line_it_opens() {
        let q = |text: &str| unclosed_quote(text.as_bytes(), b',');
        assert_eq!(q("a,b\n1,\"x\n2,y\n"), Some(2));
        assert_eq!(q("a,b\n1,\"x\"\"\n2,y\n"), Some(2));
        // Closed, escaped, spanning lines, or a quote inside an unquoted field: fine.
        assert_eq!(q("a,b\n1,\"x\"\"y\"\r\n2,\"two\nlines\"\n"), None);
        assert_eq!(q("a,b\n1,5\" pipe\n"), None);
        assert_eq!(q("a,b\n1,\"x\"y\"\n"), None);
        assert_eq!(unclosed_quote(b"a;b\n1;\"x\n", b';'), Some(2));
    }
}
