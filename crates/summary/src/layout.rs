//! A small page layout over printpdf's drawing operations: a cursor running down A4 pages,
//! wrapped paragraphs, tables whose rows never split across pages (the header is repeated
//! on the next page), and a footer with "Page X of Y" added once the page count is known.

use printpdf::{Color, Line, LinePoint, Op, PaintMode, PdfFontHandle, PdfPage, Point, Pt, Rect, Rgb, TextItem};

use crate::model::{Cell, Section, Style};
use crate::text::{self, Cleaner, Face};

const PAGE_W: f32 = 595.28;
const PAGE_H: f32 = 841.89;
const MARGIN_X: f32 = 50.0;
const TOP: f32 = PAGE_H - 48.0;
const BOTTOM: f32 = 64.0;
const FOOTER_Y: f32 = 34.0;
const CONTENT_W: f32 = PAGE_W - 2.0 * MARGIN_X;

pub const BODY: f32 = 9.5;
const SMALL: f32 = 8.0;
const LEADING: f32 = 1.3;
const CELL_PAD: f32 = 3.0;
/// Lines a table cell may take before it is cut with an ellipsis.
const MAX_CELL_LINES: usize = 8;

fn rgb(r: f32, g: f32, b: f32) -> Color {
    Color::Rgb(Rgb::new(r, g, b, None))
}

fn ink() -> Color {
    rgb(0.1, 0.1, 0.1)
}

fn muted() -> Color {
    rgb(0.38, 0.38, 0.38)
}

fn alert() -> Color {
    rgb(0.72, 0.0, 0.0)
}

pub struct Layout {
    pages: Vec<Vec<Op>>,
    ops: Vec<Op>,
    y: f32,
    cleaner: Cleaner,
    /// Shown at the top of every page after the first, so a loose page still names its
    /// patient.
    running_head: String,
}

impl Layout {
    pub fn new(running_head: &str) -> Self {
        let mut cleaner = Cleaner::default();
        let running_head = cleaner.clean(running_head);
        Layout { pages: Vec::new(), ops: Vec::new(), y: TOP, cleaner, running_head }
    }

    /// Characters the font could not show, so far.
    pub fn substituted(&self) -> usize {
        self.cleaner.substituted()
    }

    fn new_page(&mut self) {
        self.pages.push(std::mem::take(&mut self.ops));
        self.y = TOP;
        let head = text::fit(&self.running_head, Face::Regular, SMALL, CONTENT_W);
        self.draw_text(MARGIN_X, self.y - SMALL, &head, Face::Regular, SMALL, muted());
        self.y -= SMALL * LEADING + 10.0;
    }

    /// Start a new page unless `height` still fits on this one. True if a page was started.
    fn ensure(&mut self, height: f32) -> bool {
        if self.y - height < BOTTOM && self.y < TOP - 40.0 {
            self.new_page();
            true
        } else {
            false
        }
    }

    pub fn space(&mut self, pt: f32) {
        self.y -= pt;
    }

    fn draw_text(&mut self, x: f32, baseline: f32, s: &str, face: Face, size: f32, col: Color) {
        push_text(&mut self.ops, x, baseline, s, face, size, col);
    }

    fn fill_rect(&mut self, x: f32, y_bottom: f32, w: f32, h: f32, col: Color) {
        self.ops.push(Op::SetFillColor { col });
        self.ops.push(Op::DrawRectangle {
            rectangle: Rect {
                x: Pt(x),
                y: Pt(y_bottom),
                width: Pt(w),
                height: Pt(h),
                mode: Some(PaintMode::Fill),
                winding_order: None,
            },
        });
    }

    fn rule(ops: &mut Vec<Op>, x0: f32, x1: f32, y: f32, gray: f32, thickness: f32) {
        ops.push(Op::SetOutlineColor { col: rgb(gray, gray, gray) });
        ops.push(Op::SetOutlineThickness { pt: Pt(thickness) });
        ops.push(Op::DrawLine {
            line: Line {
                points: vec![
                    LinePoint { p: Point { x: Pt(x0), y: Pt(y) }, bezier: false },
                    LinePoint { p: Point { x: Pt(x1), y: Pt(y) }, bezier: false },
                ],
                is_closed: false,
            },
        });
    }

    /// A wrapped paragraph across the content width.
    pub fn paragraph(&mut self, raw: &str, face: Face, size: f32, style: Style, max_lines: usize) {
        let clean = self.cleaner.clean(raw);
        let lines = text::wrap(&clean, face, size, CONTENT_W, max_lines);
        let lh = size * LEADING;
        for line in lines {
            self.ensure(lh);
            self.y -= lh;
            self.draw_text(MARGIN_X, self.y + (lh - size) / 2.0 + 1.0, &line, face, size, color(style));
        }
    }

    /// A shaded box of text (the notice at the top of the first page).
    pub fn callout(&mut self, paragraphs: &[String]) {
        let size = BODY;
        let lh = size * LEADING;
        let pad = 8.0;
        let mut lines: Vec<String> = Vec::new();
        for p in paragraphs {
            let clean = self.cleaner.clean(p);
            lines.extend(text::wrap(&clean, Face::Regular, size, CONTENT_W - 2.0 * pad, 12));
        }
        let h = lines.len() as f32 * lh + 2.0 * pad;
        self.ensure(h);
        self.fill_rect(MARGIN_X, self.y - h, CONTENT_W, h, rgb(0.93, 0.95, 0.98));
        let mut y = self.y - pad;
        for line in &lines {
            y -= lh;
            self.draw_text(MARGIN_X + pad, y + 2.5, line, Face::Regular, size, ink());
        }
        self.y -= h;
    }

    /// Label / value lines ("Date of birth   21 July 1997").
    pub fn facts(&mut self, facts: &[(String, String)]) {
        let label_w = 160.0;
        let lh = BODY * LEADING;
        for (label, value) in facts {
            let label = self.cleaner.clean(label);
            let label = text::fit(&label, Face::Bold, BODY, label_w - 8.0);
            let value = self.cleaner.clean(value);
            let lines = text::wrap(&value, Face::Regular, BODY, CONTENT_W - label_w, 4);
            self.ensure(lh * lines.len().max(1) as f32);
            self.y -= lh;
            self.draw_text(MARGIN_X, self.y + 2.5, &label, Face::Bold, BODY, ink());
            for (i, line) in lines.iter().enumerate() {
                if i > 0 {
                    self.y -= lh;
                }
                self.draw_text(MARGIN_X + label_w, self.y + 2.5, line, Face::Regular, BODY, ink());
            }
        }
    }

    /// A section title, kept together with at least the start of what follows.
    pub fn heading(&mut self, title: &str) {
        let size = 13.0;
        self.ensure(size * LEADING + 60.0);
        self.y -= 14.0;
        let clean = self.cleaner.clean(title);
        self.y -= size * LEADING;
        self.draw_text(MARGIN_X, self.y + 3.0, &clean, Face::Bold, size, rgb(0.05, 0.2, 0.45));
        Self::rule(&mut self.ops, MARGIN_X, MARGIN_X + CONTENT_W, self.y, 0.55, 0.8);
        self.y -= 4.0;
    }

    pub fn title(&mut self, title: &str, size: f32) {
        let clean = self.cleaner.clean(title);
        for line in text::wrap(&clean, Face::Bold, size, CONTENT_W, 2) {
            self.y -= size * 1.2;
            self.draw_text(MARGIN_X, self.y + 2.0, &line, Face::Bold, size, ink());
        }
    }

    /// One section as a table (or its "none" sentence), with "and N more" after the cap.
    pub fn table(&mut self, section: &Section) {
        self.heading(section.title);
        if let Some(intro) = section.intro {
            self.paragraph(intro, Face::Regular, SMALL, Style::Muted, 4);
            self.space(3.0);
        }
        if section.rows.is_empty() {
            self.paragraph(section.empty, Face::Regular, BODY, Style::Muted, 3);
            return;
        }
        let total: f32 = section.columns.iter().map(|(_, w)| w).sum::<f32>().max(0.01);
        let widths: Vec<f32> = section.columns.iter().map(|(_, w)| w / total * CONTENT_W).collect();
        let headers: Vec<Cell> =
            section.columns.iter().map(|(h, _)| Cell { text: (*h).to_owned(), style: Style::Normal }).collect();
        self.row(&headers, &widths, true);
        for cells in &section.rows {
            let laid = self.lay_row(cells, &widths, false);
            let h = row_height(&laid);
            if self.ensure(h) {
                self.row(&headers, &widths, true);
            }
            self.draw_row(&laid, &widths, h, false);
        }
        if section.omitted > 0 {
            self.space(3.0);
            let more = format!("… and {} {} not shown.", section.omitted, section.omitted_what);
            self.paragraph(&more, Face::Regular, BODY, Style::Muted, 2);
        }
    }

    fn row(&mut self, cells: &[Cell], widths: &[f32], header: bool) {
        let laid = self.lay_row(cells, widths, header);
        let h = row_height(&laid);
        self.ensure(h);
        self.draw_row(&laid, widths, h, header);
    }

    fn lay_row(&mut self, cells: &[Cell], widths: &[f32], header: bool) -> Vec<(Vec<String>, Face, f32, Style)> {
        cells
            .iter()
            .zip(widths)
            .map(|(cell, w)| {
                let (face, size) = match (header, cell.style) {
                    (true, _) => (Face::Bold, SMALL),
                    (false, Style::Alert) => (Face::Bold, BODY),
                    (false, _) => (Face::Regular, BODY),
                };
                let clean = self.cleaner.clean(&cell.text);
                let lines = text::wrap(&clean, face, size, (w - 2.0 * CELL_PAD).max(1.0), MAX_CELL_LINES);
                (lines, face, size, cell.style)
            })
            .collect()
    }

    fn draw_row(&mut self, laid: &[(Vec<String>, Face, f32, Style)], widths: &[f32], h: f32, header: bool) {
        let top = self.y;
        if header {
            self.fill_rect(MARGIN_X, top - h, CONTENT_W, h, rgb(0.9, 0.9, 0.9));
        }
        let mut x = MARGIN_X;
        for ((lines, face, size, style), w) in laid.iter().zip(widths) {
            let lh = size * LEADING;
            let mut y = top - CELL_PAD;
            for line in lines {
                y -= lh;
                let col = if header { ink() } else { color(*style) };
                self.draw_text(x + CELL_PAD, y + (lh - size) / 2.0 + 1.0, line, *face, *size, col);
            }
            x += w;
        }
        self.y -= h;
        Self::rule(&mut self.ops, MARGIN_X, MARGIN_X + CONTENT_W, self.y, 0.8, 0.4);
    }

    /// Close the last page and add every page's footer.
    pub fn finish(mut self, footer_left: &str) -> Vec<PdfPage> {
        self.pages.push(std::mem::take(&mut self.ops));
        let total = self.pages.len();
        let left = self.cleaner.clean(footer_left);
        let mut out = Vec::with_capacity(total);
        for (i, mut ops) in self.pages.into_iter().enumerate() {
            let right = format!("Page {} of {}", i + 1, total);
            let right_w = text::width(&right, Face::Regular, SMALL);
            let left = text::fit(&left, Face::Regular, SMALL, CONTENT_W - right_w - 12.0);
            Self::rule(&mut ops, MARGIN_X, MARGIN_X + CONTENT_W, FOOTER_Y + 12.0, 0.7, 0.5);
            push_text(&mut ops, MARGIN_X, FOOTER_Y, &left, Face::Regular, SMALL, muted());
            push_text(&mut ops, MARGIN_X + CONTENT_W - right_w, FOOTER_Y, &right, Face::Regular, SMALL, muted());
            out.push(PdfPage::new(printpdf::Mm::from(Pt(PAGE_W)), printpdf::Mm::from(Pt(PAGE_H)), ops));
        }
        out
    }
}

/// One line of text: each line is its own text object, placed absolutely.
fn push_text(ops: &mut Vec<Op>, x: f32, baseline: f32, s: &str, face: Face, size: f32, col: Color) {
    if s.is_empty() {
        return;
    }
    ops.extend([
        Op::StartTextSection,
        Op::SetFont { font: PdfFontHandle::Builtin(face.builtin()), size: Pt(size) },
        Op::SetFillColor { col },
        Op::SetTextCursor { pos: Point { x: Pt(x), y: Pt(baseline) } },
        Op::ShowText { items: vec![TextItem::Text(s.to_owned())] },
        Op::EndTextSection,
    ]);
}

fn row_height(laid: &[(Vec<String>, Face, f32, Style)]) -> f32 {
    let content =
        laid.iter().map(|(lines, _, size, _)| lines.len().max(1) as f32 * size * LEADING).fold(0.0f32, f32::max);
    content + 2.0 * CELL_PAD
}

fn color(style: Style) -> Color {
    match style {
        Style::Normal => ink(),
        Style::Alert => alert(),
        Style::Muted => muted(),
    }
}
