//! Limits that keep a workbook from taking the machine's memory. A 1.5 MB .xlsx can inflate to
//! gigabytes (a sheet of spaces), and the XML reader holds a whole text run, or a whole shared
//! string, at once. Excel itself stores at most 32,767 characters in a cell and its parts compress
//! a few dozen times, so the bounds below refuse only files no spreadsheet program wrote.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::error::{Error, Result};

/// The most text one cell (or one XML tag) may hold: Excel's 32,767 characters, at up to four
/// bytes each and escaped, fit well inside it.
pub(super) const MAX_CELL_BYTES: usize = 1 << 20;

/// Parts that inflate to more than this are checked against [`MAX_INFLATE_RATIO`]; smaller
/// ones may compress as well as they like.
const RATIO_CHECKED_FROM: u64 = 64 << 20;

/// How many times its compressed size a large part may inflate to. Sheets Excel writes
/// compress 10 to 50 times; a run of one repeated byte, a thousand times.
const MAX_INFLATE_RATIO: u64 = 200;

/// Check a ZIP workbook (.xlsx, .xlsm, .xlsb, .ods) before it is parsed: no part inflates
/// beyond the ratio, and no shared string is longer than a cell may be. A file that is not a
/// readable ZIP archive passes: the workbook reader says what is wrong with it.
pub(super) fn check_zip_workbook(path: &Path) -> Result<()> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let Ok(mut archive) = zip::ZipArchive::new(BufReader::new(file)) else {
        return Ok(());
    };
    for index in 0..archive.len() {
        let Ok(part) = archive.by_index_raw(index) else {
            continue;
        };
        let (packed, inflated) = (part.compressed_size(), part.size());
        if inflated > RATIO_CHECKED_FROM && inflated > packed.saturating_mul(MAX_INFLATE_RATIO) {
            return Err(refused(
                path,
                format!(
                    "its part {} inflates from {} to {} ({} times), far beyond what a spreadsheet program writes; the file is damaged or built to exhaust memory. Open it in Excel and save it again, or ask the sender for a new export",
                    part.name().unwrap_or_default(),
                    megabytes(packed),
                    megabytes(inflated),
                    inflated / packed.max(1)
                ),
            ));
        }
    }
    for strings in ["xl/sharedStrings.xml", "xl/SharedStrings.xml"] {
        if let Ok(part) = archive.by_name(strings) {
            return check_text_runs(path, part);
        }
    }
    Ok(())
}

/// A cell's text beyond [`MAX_CELL_BYTES`], refused with the cell's address.
pub(super) fn check_cell_text(
    path: &Path,
    sheet: &str,
    row: u32,
    col: u32,
    text: &str,
) -> Result<()> {
    if text.len() <= MAX_CELL_BYTES {
        return Ok(());
    }
    Err(Error::SourceData {
        path: path.to_path_buf(),
        row: Some(u64::from(row) + 1),
        column: None,
        message: format!(
            "cell {}{} of sheet \"{sheet}\" holds {} of text; Excel's cells hold at most 32,767 characters, so the file is damaged or was not written by a spreadsheet program. Remove the cell or re-export the sheet",
            super::sheet::column_letters(col),
            row + 1,
            megabytes(text.len() as u64)
        ),
    })
}

/// Read the shared strings as a stream, in pieces, and refuse a string or tag longer than a
/// cell may be: the XML reader would hold it whole.
fn check_text_runs(path: &Path, mut part: impl Read) -> Result<()> {
    let mut piece = vec![0u8; 64 * 1024];
    let mut run = 0usize;
    loop {
        let n = match part.read(&mut piece) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            // A damaged part is reported by the workbook reader, in its words.
            Err(_) => return Ok(()),
        };
        for &b in &piece[..n] {
            // Text runs end at a tag's start and tags at their end: either bounds what the
            // reader holds at once.
            run = if b == b'<' || b == b'>' { 0 } else { run + 1 };
            if run > MAX_CELL_BYTES {
                return Err(refused(
                    path,
                    format!(
                        "one of its shared strings (cell texts) is longer than {}; Excel's cells hold at most 32,767 characters, so the file is damaged or was not written by a spreadsheet program. Ask the sender for a new export",
                        megabytes(MAX_CELL_BYTES as u64)
                    ),
                ));
            }
        }
    }
}

fn refused(path: &Path, message: String) -> Error {
    Error::SourceData {
        path: path.to_path_buf(),
        row: None,
        column: None,
        message: format!("the workbook is not read: {message}."),
    }
}

fn megabytes(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GB", bytes as f64 / f64::from(1u32 << 30))
    } else if bytes >= 1 << 20 {
        format!("{:.1} MB", bytes as f64 / f64::from(1u32 << 20))
    } else {
        format!("{} KB", bytes.div_ceil(1 << 10))
    }
}
