//! A sheet read as a stream of rows: the header row found, title rows above it skipped, empty
//! rows dropped, every cell appended to its column.

use super::*;

/// The data rows below the header, written column by column as cells stream in row order.
/// A row is only started at its first non-blank cell, so that fully empty rows leave no trace;
/// blank cells seen before that are remembered to be written once the row starts.
pub(super) struct Table {
    /// 0-based sheet row of the header.
    pub(super) header_row: u32,
    pub(super) first_col: u32,
    pub(super) columns: Vec<Column>,
    pub(super) row_numbers: Vec<u64>,
    pub(super) open_row: Option<u32>,
    pub(super) next_col: usize,
    pub(super) pending_row: Option<u32>,
    pub(super) pending_empty_text: Vec<usize>,
    pub(super) cell_errors: Vec<CellError>,
}

impl Table {
    /// Append a cell to column `k` of the open row, noting a cell that does not fit.
    pub(super) fn push(&mut self, k: usize, cell: Cell<'_>, ctx: &Ctx<'_>) {
        if let Some((value, message)) = self.columns[k].push(cell, ctx) {
            self.cell_errors.push(CellError {
                row: self.row_numbers.len().saturating_sub(1),
                column: self.columns[k].name.clone(),
                value,
                message,
            });
        }
    }

    pub(super) fn cell(
        &mut self,
        row: u32,
        col: u32,
        cell: Cell<'_>,
        ctx: &Ctx<'_>,
    ) -> Result<bool> {
        if self.open_row.is_some_and(|open| open != row) {
            self.close_row(ctx)?;
        }
        if self.pending_row != Some(row) {
            self.pending_row = Some(row);
            self.pending_empty_text.clear();
        }
        let Some(j) = col
            .checked_sub(self.first_col)
            .map(|j| j as usize)
            .filter(|j| *j < self.columns.len())
        else {
            if is_blank(cell) {
                return Ok(true);
            }
            // A value under no header (beside a merged header cell, or past the last named
            // column) would otherwise vanish without a word.
            return Err(ctx.error(
                u64::from(row) + 1,
                &format!("{}{}", column_letters(col), u64::from(row) + 1),
                format!(
                    "cell {}{} holds a value but column {} has no name in row {}, the header row; tidemark will not drop it silently. If row {} is a title, set `header_row` to the row with the column names; if a header cell is merged over several columns, name each column.",
                    column_letters(col),
                    u64::from(row) + 1,
                    column_letters(col),
                    u64::from(self.header_row) + 1,
                    u64::from(self.header_row) + 1,
                ),
            ));
        };
        let row_number = u64::from(row) + 1;
        if self.open_row == Some(row) {
            if j < self.next_col {
                return Ok(false);
            }
            for k in self.next_col..j {
                self.push(k, Cell::Empty, ctx);
            }
        } else {
            if is_blank(cell) {
                if matches!(cell, Cell::Text(_)) {
                    self.pending_empty_text.push(j);
                }
                return Ok(true);
            }
            self.open_row = Some(row);
            self.row_numbers.push(row_number);
            for k in 0..j {
                let earlier = if self.pending_empty_text.contains(&k) {
                    Cell::Text("")
                } else {
                    Cell::Empty
                };
                self.push(k, earlier, ctx);
            }
        }
        self.push(j, cell, ctx);
        self.next_col = j + 1;
        Ok(true)
    }

    pub(super) fn close_row(&mut self, ctx: &Ctx<'_>) -> Result<()> {
        if self.open_row.take().is_some() {
            for k in self.next_col..self.columns.len() {
                self.push(k, Cell::Empty, ctx);
            }
        }
        self.next_col = 0;
        Ok(())
    }

    pub(super) fn finish(mut self, ctx: &Ctx<'_>) -> Result<FileRead> {
        self.close_row(ctx)?;
        let mut fields = Vec::with_capacity(self.columns.len());
        let mut arrays = Vec::with_capacity(self.columns.len());
        for column in self.columns {
            let (data_type, array) = match column.builder {
                ColumnBuilder::Inferred(b) => b.finish(),
                ColumnBuilder::Declared(b) => {
                    let (data_type, array, misfits) = b.finish(&column.name)?;
                    self.cell_errors.extend(misfits);
                    (data_type, array)
                }
            };
            fields.push(Field::new(column.name, data_type, true));
            arrays.push(array);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(self.row_numbers.len()));
        let batch =
            RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), arrays, &options)
                .map_err(|e| engine::error("building the Excel sheet's columns", e.into()))?;
        self.cell_errors.sort_by_key(|e| e.row);
        Ok(FileRead {
            batches: vec![batch],
            rows: FileRows::Listed(Arc::new(self.row_numbers)),
            cell_errors: self.cell_errors,
        })
    }
}

pub(super) enum Stage {
    BeforeHeader,
    /// Header cells seen so far: sheet column and name.
    Header(Vec<(u32, String)>),
    Data(Table),
}

/// Consumes a sheet's cells in row order, whichever reader produced them.
pub(super) struct SheetReader<'a> {
    pub(super) ctx: Ctx<'a>,
    pub(super) options: &'a SourceOptions,
    pub(super) sheet: &'a str,
    pub(super) only_sheet: bool,
    /// 0-based.
    pub(super) header_row: u32,
    /// Rows up to the last one holding a non-blank cell, as Excel counts them.
    pub(super) rows_seen: u32,
    pub(super) last_row: u32,
    pub(super) stage: Stage,
}

impl<'a> SheetReader<'a> {
    pub(super) fn new(
        path: &'a Path,
        options: &'a SourceOptions,
        sheet: &'a str,
        only_sheet: bool,
        is_1904: bool,
    ) -> Self {
        SheetReader {
            ctx: Ctx {
                path,
                null_values: &options.null_values,
                is_1904,
            },
            options,
            sheet,
            only_sheet,
            header_row: u32::try_from(options.header_row.saturating_sub(1)).unwrap_or(u32::MAX),
            rows_seen: 0,
            last_row: 0,
            stage: Stage::BeforeHeader,
        }
    }

    /// Take one cell (0-based position). `Ok(false)` when cells arrive out of row order, which
    /// streaming cannot handle; the caller then reads the sheet another way.
    pub(super) fn feed(&mut self, row: u32, col: u32, cell: Cell<'_>) -> Result<bool> {
        if row < self.last_row {
            return Ok(false);
        }
        self.last_row = row;
        if let Cell::Text(text) = cell {
            super::bounds::check_cell_text(self.ctx.path, self.sheet, row, col, text)?;
        }
        let blank = is_blank(cell);
        if !blank {
            self.rows_seen = self.rows_seen.max(row.saturating_add(1));
        }
        if matches!(self.stage, Stage::BeforeHeader) {
            if blank || row < self.header_row {
                return Ok(true);
            }
            if row > self.header_row {
                return Err(self.empty_header());
            }
            self.stage = Stage::Header(Vec::new());
        }
        if row > self.header_row
            && let Stage::Header(names) = &mut self.stage
        {
            let names = std::mem::take(names);
            self.stage = Stage::Data(self.table(names)?);
        }
        match &mut self.stage {
            Stage::Header(names) => {
                if let Some(name) = header_name(&self.ctx, row, col, cell)? {
                    names.push((col, name));
                }
                Ok(true)
            }
            Stage::Data(table) => table.cell(row, col, cell, &self.ctx),
            Stage::BeforeHeader => Ok(true),
        }
    }

    pub(super) fn finish(mut self) -> Result<FileRead> {
        match std::mem::replace(&mut self.stage, Stage::BeforeHeader) {
            Stage::BeforeHeader if self.rows_seen == 0 && self.only_sheet => {
                Err(Error::SourceEmpty {
                    path: self.ctx.path.to_path_buf(),
                })
            }
            Stage::BeforeHeader if self.rows_seen == 0 => Err(Error::SourceData {
                path: self.ctx.path.to_path_buf(),
                row: None,
                column: None,
                message: format!(
                    "sheet \"{}\" is empty (no header and no rows). Check `sheet`, or the file.",
                    self.sheet
                ),
            }),
            Stage::BeforeHeader => Err(Error::SourceData {
                path: self.ctx.path.to_path_buf(),
                row: None,
                column: None,
                message: format!(
                    "`header_row: {}` is beyond the data: sheet \"{}\" has only {} rows. Check `header_row`.",
                    self.options.header_row, self.sheet, self.rows_seen
                ),
            }),
            Stage::Header(names) => self.table(names)?.finish(&self.ctx),
            Stage::Data(table) => table.finish(&self.ctx),
        }
    }

    pub(super) fn empty_header(&self) -> Error {
        Error::SourceData {
            path: self.ctx.path.to_path_buf(),
            row: Some(u64::from(self.header_row) + 1),
            column: None,
            message: format!(
                "the header row of sheet \"{}\" is empty, so there are no column names. Set `header_row` to the row that holds them.",
                self.sheet
            ),
        }
    }

    /// Columns span from the first to the last named header cell; gaps get `column_N`.
    pub(super) fn table(&self, mut names: Vec<(u32, String)>) -> Result<Table> {
        names.sort_by_key(|(col, _)| *col);
        let (Some((first, _)), Some((last, _))) = (names.first(), names.last()) else {
            return Err(self.empty_header());
        };
        let (first, last) = (*first, *last);
        let mut named = names.into_iter().peekable();
        let mut columns: Vec<Column> = Vec::with_capacity((last - first) as usize + 1);
        let mut sheet_cols: Vec<u32> = Vec::with_capacity(columns.capacity());
        for col in first..=last {
            let name = match named.next_if(|(c, _)| *c == col) {
                Some((_, name)) => name,
                None => format!("column_{}", u64::from(col) + 1),
            };
            if let Some(k) = columns.iter().position(|c| c.name == name) {
                return Err(Error::SourceData {
                    path: self.ctx.path.to_path_buf(),
                    row: Some(u64::from(self.header_row) + 1),
                    column: Some(name.clone()),
                    message: format!(
                        "the header names column \"{name}\" twice (columns {} and {}). Rename one in the sheet.",
                        column_letters(sheet_cols[k]),
                        column_letters(col)
                    ),
                });
            }
            let builder = match self.options.declared_type(&name) {
                Some(t) => ColumnBuilder::Declared(Declared::new(t)),
                None => ColumnBuilder::Inferred(Inferred::Nulls(0)),
            };
            columns.push(Column { name, builder });
            sheet_cols.push(col);
        }
        Ok(Table {
            header_row: self.header_row,
            first_col: first,
            columns,
            row_numbers: Vec::new(),
            open_row: None,
            next_col: 0,
            pending_row: None,
            pending_empty_text: Vec::new(),
            cell_errors: Vec::new(),
        })
    }
}

/// A header cell as a column name; `None` for a blank cell. `null_values` do not apply: a
/// header that reads "NA" still names its column.
pub(super) fn header_name(
    ctx: &Ctx<'_>,
    row: u32,
    col: u32,
    cell: Cell<'_>,
) -> Result<Option<String>> {
    let name = match cell {
        Cell::Empty => return Ok(None),
        Cell::Text(s) => s.to_string(),
        Cell::Error(e) => {
            return Err(Error::SourceData {
                path: ctx.path.to_path_buf(),
                row: Some(u64::from(row) + 1),
                column: None,
                message: format!(
                    "header cell {}{} holds the Excel error {e} instead of a column name; fix the sheet.",
                    column_letters(col),
                    row + 1
                ),
            });
        }
        other => match ctx.value(other) {
            Ok(value) => describe(&value),
            Err(message) => {
                return Err(ctx.error(u64::from(row) + 1, &column_letters(col), message));
            }
        },
    };
    Ok((!name.trim().is_empty()).then_some(name))
}

/// Excel's column letters for a 0-based column: 0 -> A, 26 -> AA.
pub(super) fn column_letters(col: u32) -> String {
    let mut n = u64::from(col) + 1;
    let mut letters = Vec::new();
    while n > 0 {
        let rem = ((n - 1) % 26) as u8;
        letters.push(char::from(b'A' + rem));
        n = (n - 1) / 26;
    }
    letters.iter().rev().collect()
}
