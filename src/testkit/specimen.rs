//! Synthetic specimen ID cards for document tests: a China resident ID card's portrait side
//! with made-up data, CJK text drawn with Noto Sans CJK SC (Debian `fonts-noto-cjk`) and a
//! portrait still, at the card's real 85.60 x 53.98 mm proportions (10 px/mm). The layout only
//! resembles the real card; nothing here is a real person's data.

use ab_glyph::{Font, FontVec, PxScale, ScaleFont};
use rand::Rng;

use super::render::RgbImage;
use crate::document::checks::gb11643_check_char;

/// Where `scripts/setup` (apt `fonts-noto-cjk`) puts the font, and the face index of
/// "Noto Sans CJK SC" inside the collection.
pub const CJK_FONT_PATH: &str = "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc";
const CJK_SC_INDEX: u32 = 2;

pub const CARD_WIDTH: usize = 856;
pub const CARD_HEIGHT: usize = 540;

/// The printed data of a specimen card.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecimenData {
    pub name: String,
    /// "男" or "女".
    pub sex: &'static str,
    pub ethnicity: &'static str,
    pub birth: (i32, u32, u32),
    pub address: [String; 2],
    /// 18 characters, as printed (may carry a wrong check character on purpose).
    pub number: String,
}

const SURNAMES: [&str; 10] = ["张", "王", "李", "刘", "陈", "杨", "赵", "黄", "周", "吴"];
const GIVEN: [&str; 12] = [
    "伟", "芳", "娜", "敏", "静", "磊", "洋", "勇", "军", "杰", "丽", "强",
];
const REGIONS: [&str; 5] = ["110105", "310104", "440305", "510107", "330106"];
const STREETS: [&str; 5] = [
    "朝阳区建国路",
    "徐汇区漕溪路",
    "南山区科技园",
    "武侯区人民南路",
    "西湖区文三路",
];

impl SpecimenData {
    /// Made-up, internally consistent data: the number's birth date, sex digit and check
    /// character agree with the printed fields.
    pub fn random<R: Rng>(rng: &mut R) -> SpecimenData {
        let mut name = SURNAMES[rng.gen_range(0..SURNAMES.len())].to_string();
        for _ in 0..rng.gen_range(1..=2) {
            name.push_str(GIVEN[rng.gen_range(0..GIVEN.len())]);
        }
        let birth = (
            rng.gen_range(1960..=2004),
            rng.gen_range(1..=12u32),
            rng.gen_range(1..=28u32),
        );
        let male = rng.gen_bool(0.5);
        let region = rng.gen_range(0..REGIONS.len());
        let seq = rng.gen_range(0..50u32) * 2 + male as u32;
        let first17 = format!(
            "{}{:04}{:02}{:02}{:02}{}",
            REGIONS[region],
            birth.0,
            birth.1,
            birth.2,
            rng.gen_range(10..99u32),
            seq % 10
        );
        let check = gb11643_check_char(&first17).unwrap_or('0');
        SpecimenData {
            name,
            sex: if male { "男" } else { "女" },
            ethnicity: "汉",
            birth,
            address: [
                format!("{}{}号", STREETS[region], rng.gen_range(1..300)),
                format!("{}单元{}室", rng.gen_range(1..9), rng.gen_range(101..2000)),
            ],
            number: format!("{first17}{check}"),
        }
    }

    /// The same card with a check character that does not match (a misprint or a forgery).
    pub fn with_wrong_check_char(mut self) -> SpecimenData {
        let last = self.number.pop().unwrap_or('0');
        let wrong = if last == '1' { '2' } else { '1' };
        self.number.push(wrong);
        self
    }
}

/// Noto Sans CJK SC from the Debian package.
pub fn load_cjk_font() -> Result<FontVec, String> {
    let bytes = std::fs::read(CJK_FONT_PATH)
        .map_err(|e| format!("{CJK_FONT_PATH}: {e} (install fonts-noto-cjk: scripts/setup)"))?;
    FontVec::try_from_vec_and_index(bytes, CJK_SC_INDEX).map_err(|e| e.to_string())
}

/// Draws `text` with its top-left at (x, y), at an em size of `px`, in `colour`; `spacing` adds pixels
/// between characters. Returns the x after the last character.
pub fn draw_text(
    img: &mut RgbImage,
    font: &FontVec,
    text: &str,
    (x, y): (f32, f32),
    px: f32,
    colour: [u8; 3],
    spacing: f32,
) -> f32 {
    // ab_glyph's scale is ascent-to-descent; CJK fonts' is 1.45 em: make `px` the em size.
    let em = font.units_per_em().unwrap_or(1000.0);
    let scale = PxScale::from(px * font.height_unscaled() / em);
    let scaled = font.as_scaled(scale);
    let baseline = y + scaled.ascent();
    let mut pen = x;
    for c in text.chars() {
        let id = font.glyph_id(c);
        let glyph = id.with_scale_and_position(scale, ab_glyph::point(pen, baseline));
        if let Some(outline) = font.outline_glyph(glyph) {
            let bounds = outline.px_bounds();
            outline.draw(|gx, gy, coverage| {
                let (px_x, px_y) = (
                    bounds.min.x as i64 + gx as i64,
                    bounds.min.y as i64 + gy as i64,
                );
                if px_x < 0 || px_y < 0 || px_x >= img.width as i64 || px_y >= img.height as i64 {
                    return;
                }
                let (ux, uy) = (px_x as usize, px_y as usize);
                let under = img.pixel(ux, uy);
                let a = coverage.clamp(0.0, 1.0);
                let mixed: [u8; 3] = std::array::from_fn(|i| {
                    (under[i] as f32 * (1.0 - a) + colour[i] as f32 * a + 0.5) as u8
                });
                img.set_pixel(ux, uy, mixed);
            });
        }
        pen += scaled.h_advance(id) + spacing;
    }
    pen
}

/// The card's portrait side: pale guilloche-like background, blue labels, black data, the
/// portrait at the right. `portrait` is scaled to fill a 250 x 310 px frame.
pub fn render_cn_id(data: &SpecimenData, portrait: &RgbImage, font: &FontVec) -> RgbImage {
    let mut card = RgbImage::new(CARD_WIDTH, CARD_HEIGHT, [0, 0, 0]);
    for y in 0..CARD_HEIGHT {
        for x in 0..CARD_WIDTH {
            // A soft gradient with faint wavy lines, as printed security backgrounds have.
            let t = x as f32 / CARD_WIDTH as f32;
            let wave = ((x as f32 * 0.05 + (y as f32 * 0.021).sin() * 6.0).sin() * 3.0) as i32;
            let base = [226 - (10.0 * t) as i32, 232 - (6.0 * t) as i32, 236];
            card.set_pixel(x, y, base.map(|v| (v + wave).clamp(0, 255) as u8));
        }
    }
    let label = [60, 100, 160];
    let ink = [25, 25, 30];
    draw_text(&mut card, font, "姓名", (48.0, 52.0), 30.0, label, 4.0);
    draw_text(&mut card, font, &data.name, (150.0, 44.0), 44.0, ink, 6.0);
    draw_text(&mut card, font, "性别", (48.0, 124.0), 30.0, label, 4.0);
    draw_text(&mut card, font, data.sex, (150.0, 120.0), 34.0, ink, 0.0);
    draw_text(&mut card, font, "民族", (260.0, 124.0), 30.0, label, 4.0);
    draw_text(
        &mut card,
        font,
        data.ethnicity,
        (360.0, 120.0),
        34.0,
        ink,
        0.0,
    );
    draw_text(&mut card, font, "出生", (48.0, 192.0), 30.0, label, 4.0);
    let (y, m, d) = data.birth;
    let mut pen = draw_text(
        &mut card,
        font,
        &y.to_string(),
        (150.0, 188.0),
        34.0,
        ink,
        1.0,
    );
    for (value, unit) in [
        (None, "年"),
        (Some(m), ""),
        (None, "月"),
        (Some(d), ""),
        (None, "日"),
    ] {
        let text = value.map_or(unit.to_string(), |v| v.to_string());
        pen = draw_text(&mut card, font, &text, (pen + 10.0, 188.0), 34.0, ink, 1.0);
    }
    draw_text(&mut card, font, "住址", (48.0, 262.0), 30.0, label, 4.0);
    draw_text(
        &mut card,
        font,
        &data.address[0],
        (150.0, 258.0),
        32.0,
        ink,
        1.0,
    );
    draw_text(
        &mut card,
        font,
        &data.address[1],
        (150.0, 304.0),
        32.0,
        ink,
        1.0,
    );
    draw_text(
        &mut card,
        font,
        "公民身份号码",
        (48.0, 452.0),
        30.0,
        label,
        2.0,
    );
    draw_text(
        &mut card,
        font,
        &data.number,
        (300.0, 444.0),
        40.0,
        ink,
        3.0,
    );
    // Portrait, cover-fitted into its frame.
    let (fx, fy, fw, fh) = (566usize, 56usize, 250usize, 310usize);
    let scale = (fw as f32 / portrait.width as f32).max(fh as f32 / portrait.height as f32);
    let (sw, sh) = (
        (portrait.width as f32 * scale).ceil() as usize,
        (portrait.height as f32 * scale).ceil() as usize,
    );
    let scaled = portrait.resized(sw, sh);
    let (ox, oy) = ((sw - fw) / 2, (sh - fh) / 2);
    for y in 0..fh {
        for x in 0..fw {
            card.set_pixel(fx + x, fy + y, scaled.pixel(ox + x, oy + y));
        }
    }
    card
}

/// Adds a strong specular highlight (a lamp reflected in the card's laminate) centred at
/// (cx, cy) in card pixels, `radius` wide: saturated white in the middle, fading out.
pub fn add_glare(card: &mut RgbImage, (cx, cy): (f32, f32), radius: f32) {
    for y in 0..card.height {
        for x in 0..card.width {
            let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2) * 2.0).sqrt() / radius;
            if d >= 1.0 {
                continue;
            }
            let a = if d < 0.6 { 1.0 } else { (1.0 - d) / 0.4 };
            let p = card.pixel(x, y);
            card.set_pixel(x, y, p.map(|v| (v as f32 * (1.0 - a) + 255.0 * a) as u8));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn random_specimens_carry_valid_numbers_and_a_wrong_one_fails() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..20 {
            let d = SpecimenData::random(&mut rng);
            let info = crate::document::checks::validate_cn_id(&d.number, (2026, 1, 1))
                .unwrap_or_else(|e| panic!("{}: {e}", d.number));
            assert_eq!(info.birth, d.birth);
            let male = d.sex == "男";
            assert_eq!(info.sex == crate::document::checks::Sex::Male, male);
            let bad = d.with_wrong_check_char();
            assert!(crate::document::checks::validate_cn_id(&bad.number, (2026, 1, 1)).is_err());
        }
    }

    #[test]
    fn text_is_drawn_with_the_cjk_font() {
        let Ok(font) = load_cjk_font() else {
            panic!("{CJK_FONT_PATH} is missing: run scripts/setup");
        };
        let mut img = RgbImage::new(200, 60, [255, 255, 255]);
        let end = draw_text(&mut img, &font, "姓名", (5.0, 5.0), 40.0, [0, 0, 0], 0.0);
        assert!(
            (end - 85.0).abs() < 5.0,
            "two 40 px CJK glyphs advance about 80 px: {end}"
        );
        let dark = img.data.chunks(3).filter(|p| p[0] < 128).count();
        assert!(dark > 200, "glyphs drawn: {dark} dark pixels");
    }
}
