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
        .with_batch_size(super::batch_rows(text_schema.fields().len()));
    if let Some(nulls) = nulls {
        builder = builder.with_null_regex(nulls.clone());
    }
    builder
}

mod careful;
mod pieces;

use careful::*;
pub use careful::{read_csv_in_one_piece, record_line, record_lines};
pub use pieces::stream_csv_pieces;
use pieces::*;

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
