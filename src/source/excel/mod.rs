//! Excel workbooks (.xlsx, .xlsm, .xls, .xlsb, .ods) through calamine. Cells go straight into
//! Arrow builders: a column's type follows its cells (numbers, booleans, dates) or its declared
//! type, and a column whose cells mix kinds becomes text rendered as a person reads it in Excel,
//! so a barcode typed partly as text (`0123456789012`) and partly as a number (`7000000200000`)
//! keeps every digit and never gains a `.0` or an exponent.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use calamine::{
    CellErrorType, Data, DataRef, ExcelDateTime, ExcelDateTimeType, Ods, Range, Reader, SheetType,
    Xls, Xlsb, Xlsx, open_workbook,
};
use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int32Builder, Int64Builder,
    StringBuilder, TimestampMicrosecondBuilder, new_null_array,
};
use datafusion::arrow::compute::kernels::cast_utils::Parser;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Field, Float64Type, Int32Type, Int64Type, Schema, TimeUnit,
    TimestampMicrosecondType,
};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use super::types::{parse_text_column, type_name};
use super::{CellError, FileRead, FileRows};
use super::{SheetRef, SourceOptions};
use crate::engine;
use crate::error::{Error, Result};

/// Integers up to this magnitude survive a trip through f64, which is how Excel stores numbers.
const MAX_EXACT_INT: f64 = 9_007_199_254_740_992.0;
const MICROS_PER_DAY: i64 = 86_400_000_000;
const MILLIS_PER_DAY: f64 = 86_400_000.0;

/// Read one sheet of an Excel workbook into a record batch.
///
/// The sheet is `options.sheet` (a name or a 0-based index; the first worksheet by default).
/// Row `options.header_row` (1-based, so title rows above it are skipped) names the columns,
/// from its first to its last non-empty cell; an empty header cell is named `column_N` after
/// its sheet column. Fully empty rows below it are skipped. Declared columns
/// (`options.columns`) are converted to their type; the others take the type their cells share
/// (int64, float64, boolean, timestamp), else text. Cells whose text is one of
/// `options.null_values` are null. An error cell (`#N/A`, `#DIV/0!`...), a value that does not
/// fit its declared type, a missing sheet or a file that is no workbook is an
/// [`Error::SourceData`]; errors about a cell name its sheet row as Excel shows it.
pub fn read_excel(path: &Path, options: &SourceOptions) -> Result<RecordBatch> {
    // A sheet is read into one batch.
    Ok(read_excel_rows(path, options)?.strict(path)?.remove(0))
}

/// Read a sheet as [`read_excel`] does, but report cells that do not fit their column (error
/// cells, values that do not fit a declared type) instead of failing: they are null in the
/// batch and each rejects its row.
pub fn read_excel_rows(path: &Path, options: &SourceOptions) -> Result<FileRead> {
    // calamine asserts on some malformed containers (found by fuzzing): a damaged file.
    crate::error::guard_parser(path, "Excel", || read_workbook(path, options))
}

fn read_workbook(path: &Path, options: &SourceOptions) -> Result<FileRead> {
    if options.header_row == 0 {
        return Err(Error::SourceData {
            path: path.to_path_buf(),
            row: None,
            column: None,
            message: "`header_row` is 1-based; use 1 for the first row of the sheet.".into(),
        });
    }
    let container = sniff(path)?;
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .unwrap_or_default();
    if matches!(container, Container::Zip) {
        bounds::check_zip_workbook(path)?;
    }
    match container {
        Container::Ole => {
            check_directory_chain(path)?;
            let mut wb: Xls<_> = open_workbook(path).map_err(|e| {
                if is_encrypted(path) {
                    Error::SourceData {
                        path: path.to_path_buf(),
                        row: None,
                        column: None,
                        message: "the workbook is password-protected (encrypted), so it cannot be read. Open it in Excel and save it without a password (File > Info > Protect Workbook), then run again.".into(),
                    }
                } else {
                    not_a_workbook(path, e)
                }
            })?;
            let is_1904 = wb.has_1904_epoch();
            read_with_range(path, &mut wb, options, is_1904)
        }
        Container::Zip if extension == "ods" => {
            let mut wb: Ods<_> = open_workbook(path).map_err(|e| not_a_workbook(path, e))?;
            read_with_range(path, &mut wb, options, false)
        }
        Container::Zip if extension == "xlsb" => {
            let mut wb: Xlsb<_> = open_workbook(path).map_err(|e| not_a_workbook(path, e))?;
            read_with_range(path, &mut wb, options, false)
        }
        Container::Zip => match open_workbook::<Xlsx<_>, _>(path) {
            Ok(mut wb) => read_xlsx(path, &mut wb, options),
            // A vendor's .xlsx may really be an OpenDocument file; try that before giving up.
            Err(xlsx_error) => match open_workbook::<Ods<_>, _>(path) {
                Ok(mut wb) => read_with_range(path, &mut wb, options, false),
                Err(_) => Err(not_a_workbook(path, xlsx_error)),
            },
        },
        Container::Other(what) => Err(not_a_workbook(
            path,
            format!(
                "it is neither a ZIP container (.xlsx, .xlsm, .ods) nor an OLE2 file (.xls); {what}"
            ),
        )),
    }
}

/// Whether an OLE2 file is an encrypted Office document: Excel stores a password-protected
/// .xlsx as an OLE2 container with an `EncryptedPackage` stream (names are UTF-16 there).
fn is_encrypted(path: &Path) -> bool {
    let name: Vec<u8> = "EncryptedPackage"
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    std::fs::read(path).is_ok_and(|bytes| bytes.windows(name.len()).any(|w| w == name))
}

/// calamine 0.38 follows an OLE file's allocation-table chains without a bound, so a damaged
/// file whose chains loop exhausts memory (found by fuzzing: the directory's chain, and a
/// stream's). In a sound file every chain ends, so neither allocation table (the FAT, and the
/// mini FAT of small streams) holds a loop: look for one in both, first. Tables this check
/// cannot read (an allocation table listed beyond the header, in large files) are left to
/// calamine.
fn check_directory_chain(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let damaged = |why: &str| not_a_workbook(path, format!("its OLE container is damaged: {why}"));
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let shift = bytes
        .get(0x1E..0x20)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or_else(|| damaged("it is shorter than its header"))?;
    if !(7..=16).contains(&shift) {
        return Err(damaged("its sector size is invalid"));
    }
    let size = 1usize << shift;
    let per_sector = size / 4;
    let sector_entries = |sector: u32| -> Vec<u32> {
        (0..per_sector)
            .map_while(|i| u32_at((sector as usize + 1) * size + i * 4))
            .collect()
    };
    // The first 109 allocation-table sectors are listed in the header.
    let fat: Vec<u32> = (0..109)
        .filter_map(|i| u32_at(0x4C + 4 * i))
        .take_while(|&s| s < 0xFFFF_FFFA)
        .flat_map(sector_entries)
        .collect();
    if let Some(why) = table_loop(&fat) {
        return Err(damaged(&format!("its allocation table {why}")));
    }
    let directory = u32_at(0x30).ok_or_else(|| damaged("it is shorter than its header"))?;
    if fat.get(directory as usize).is_none() && directory < 0xFFFF_FFFA {
        // Beyond the table read here: calamine reports it.
        return Ok(());
    }
    // The mini FAT is stored in a chain of the FAT, loop-free by now.
    let mut mini_fat = Vec::new();
    let mut sector = u32_at(0x3C).unwrap_or(0xFFFF_FFFE);
    while sector < 0xFFFF_FFFA && mini_fat.len() < bytes.len() {
        mini_fat.extend(sector_entries(sector));
        match fat.get(sector as usize) {
            Some(&next) => sector = next,
            None => break,
        }
    }
    if let Some(why) = table_loop(&mini_fat) {
        return Err(damaged(&format!("its mini allocation table {why}")));
    }
    Ok(())
}

/// Whether following an allocation table from any sector comes back to a sector already
/// passed: says how, if so. Entries from 0xFFFFFFFA up end a chain (or mark a sector unused).
fn table_loop(table: &[u32]) -> Option<&'static str> {
    // 0: not seen; 1: on the chain being followed; 2: known to end.
    let mut state = vec![0u8; table.len()];
    let mut chain = Vec::new();
    for start in 0..table.len() {
        let mut at = start;
        while state.get(at) == Some(&0) {
            state[at] = 1;
            chain.push(at);
            let next = table[at];
            if next >= 0xFFFF_FFFA {
                break;
            }
            at = next as usize;
        }
        if state.get(at) == Some(&1) && table[at] < 0xFFFF_FFFA {
            return Some("has a chain that loops");
        }
        for &passed in &chain {
            state[passed] = 2;
        }
        chain.clear();
    }
    None
}

/// What the first bytes of a file say it is.
enum Container {
    Zip,
    Ole,
    Other(&'static str),
}

/// Decide the reader from the file's signature rather than its name, because vendors' files are
/// often misnamed (an .xls that is really .xlsx, a CSV saved as .xlsx).
fn sniff(path: &Path) -> Result<Container> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut head = [0u8; 8];
    let mut filled = 0;
    while filled < head.len() {
        let n = file
            .read(&mut head[filled..])
            .map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    let head = &head[..filled];
    if head.is_empty() {
        return Err(Error::SourceEmpty {
            path: path.to_path_buf(),
        });
    }
    Ok(if head.starts_with(b"PK\x03\x04") {
        Container::Zip
    } else if head.starts_with(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]) {
        Container::Ole
    } else if head.starts_with(b"PK") {
        Container::Other("it starts like a ZIP file but is damaged or truncated")
    } else if head
        .iter()
        .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace() || *b >= 0x80)
    {
        Container::Other("it holds text (a CSV or HTML file saved under an Excel name?)")
    } else {
        Container::Other("its content is not a known workbook format")
    })
}

fn not_a_workbook(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::SourceData {
        path: path.to_path_buf(),
        row: None,
        column: None,
        message: format!(
            "the file is not a readable Excel workbook: {reason}. Check the file: it must be a real .xlsx, .xlsm, .xls or .ods workbook, completely downloaded."
        ),
    }
}

fn unreadable_sheet(path: &Path, sheet: &str, reason: impl std::fmt::Display) -> Error {
    Error::SourceData {
        path: path.to_path_buf(),
        row: None,
        column: None,
        message: format!(
            "sheet \"{sheet}\" cannot be read: {reason}. The workbook may be damaged; check the file or save it again from Excel."
        ),
    }
}

/// The sheet to read: by name (exact, else the one name equal ignoring case, as Excel treats
/// sheet names), by index, or the first worksheet (a chart sheet holds no cells).
fn pick_sheet<RS: std::io::Read + std::io::Seek, R: Reader<RS>>(
    path: &Path,
    wb: &R,
    wanted: Option<&SheetRef>,
) -> Result<String> {
    let sheets = wb.sheets_metadata();
    let names: Vec<&str> = sheets.iter().map(|s| s.name.as_str()).collect();
    let listed = || {
        names
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let missing = |what: String| Error::SourceData {
        path: path.to_path_buf(),
        row: None,
        column: None,
        message: format!(
            "{what}. The workbook's sheets are: {}. Check `sheet`.",
            listed()
        ),
    };
    match wanted {
        None => sheets
            .iter()
            .find(|s| s.typ == SheetType::WorkSheet)
            .or_else(|| sheets.first())
            .map(|s| s.name.clone())
            .ok_or_else(|| Error::SourceData {
                path: path.to_path_buf(),
                row: None,
                column: None,
                message: "the workbook has no sheets. Check the file.".into(),
            }),
        Some(SheetRef::Name(name)) => {
            if let Some(exact) = names.iter().find(|n| *n == name) {
                return Ok((*exact).to_string());
            }
            let folded: Vec<&&str> = names.iter().filter(|n| n.eq_ignore_ascii_case(name)).collect();
            match folded.as_slice() {
                [one] => Ok((**one).to_string()),
                _ => Err(missing(format!("the workbook has no sheet named \"{name}\""))),
            }
        }
        Some(SheetRef::Index(index)) => names.get(*index).map(|n| (*n).to_string()).ok_or_else(|| {
            missing(format!(
                "sheet index {index} is out of range: the workbook has {} sheet(s), numbered from 0",
                names.len()
            ))
        }),
    }
}

/// .xlsx/.xlsm: stream the sheet's cells, which holds a fraction of the memory of a full range.
fn read_xlsx(
    path: &Path,
    wb: &mut Xlsx<BufReader<File>>,
    options: &SourceOptions,
) -> Result<FileRead> {
    let sheet = pick_sheet(path, wb, options.sheet.as_ref())?;
    let only_sheet = wb.sheet_names().len() == 1;
    let is_1904 = wb.has_1904_epoch();
    let streamed = {
        let mut cells = wb
            .worksheet_cells_reader(&sheet)
            .map_err(|e| unreadable_sheet(path, &sheet, e))?;
        let mut reader = SheetReader::new(path, options, &sheet, only_sheet, is_1904);
        loop {
            match cells.next_cell() {
                Ok(Some(cell)) => {
                    let (row, col) = cell.get_position();
                    if !reader.feed(row, col, cell.get_value().as_cell())? {
                        break None;
                    }
                }
                Ok(None) => break Some(reader.finish()?),
                Err(e) => return Err(unreadable_sheet(path, &sheet, e)),
            }
        }
    };
    match streamed {
        Some(batch) => Ok(batch),
        None => {
            // Rows stored out of order (rare, hand-made files): the full range sorts them.
            tracing::debug!(path = %path.display(), sheet, "cells out of order; reading the sheet as a range");
            let range = wb
                .worksheet_range(&sheet)
                .map_err(|e| unreadable_sheet(path, &sheet, e))?;
            read_range(path, &range, options, &sheet, only_sheet, is_1904)
        }
    }
}

fn read_with_range<RS, R>(
    path: &Path,
    wb: &mut R,
    options: &SourceOptions,
    is_1904: bool,
) -> Result<FileRead>
where
    RS: std::io::Read + std::io::Seek,
    R: Reader<RS>,
    R::Error: std::fmt::Display,
{
    let sheet = pick_sheet(path, wb, options.sheet.as_ref())?;
    let only_sheet = wb.sheet_names().len() == 1;
    let range = wb
        .worksheet_range(&sheet)
        .map_err(|e| unreadable_sheet(path, &sheet, e))?;
    read_range(path, &range, options, &sheet, only_sheet, is_1904)
}

fn read_range(
    path: &Path,
    range: &Range<Data>,
    options: &SourceOptions,
    sheet: &str,
    only_sheet: bool,
    is_1904: bool,
) -> Result<FileRead> {
    let mut reader = SheetReader::new(path, options, sheet, only_sheet, is_1904);
    if let Some((first_row, first_col)) = range.start() {
        for (i, cells) in range.rows().enumerate() {
            let row = first_row.saturating_add(i as u32);
            for (j, cell) in cells.iter().enumerate() {
                if !matches!(cell, Data::Empty) {
                    // A range is ordered, so `feed` never asks for a fallback here.
                    reader.feed(row, first_col.saturating_add(j as u32), cell.as_cell())?;
                }
            }
        }
    }
    reader.finish()
}

mod bounds;
mod cells;
mod columns;
mod sheet;

use cells::*;
use columns::*;
use sheet::*;

#[cfg(test)]
mod tests;
