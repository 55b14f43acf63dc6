//! From OCR lines to identity fields, and the comparison with what the relying party expects.
//!
//! China resident ID: the name follows the label 姓名 (in the same box or the next box on its
//! row), the number is the 18-character run of digits (last may be X) near 公民身份号码, the
//! printed birth date follows 出生. Passport: the two 44-character MRZ lines at the bottom.
//! Common OCR confusions in digit runs (O for 0, I/l for 1, lower-case x) are undone before
//! checking; anything else is reported as read.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::checks::{parse_td3, validate_cn_id, IdNumberError, MrzError, Td3};
use super::ocr::TextLine;

/// Which document the session asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    /// China resident identity card (居民身份证), portrait side.
    #[default]
    CnResidentId,
    /// Passport data page (ICAO 9303 TD3 MRZ).
    Passport,
    /// Any ID-1 card with a portrait: captured and portrait-matched; no text checks.
    Id1Card,
}

/// What was read from the card (kept only as the session's policy allows).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReadFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The document or ID number as read (after undoing digit confusions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    /// `YYYY-MM-DD` where the document states one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<String>,
}

/// The number check's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum NumberCheck {
    Valid,
    /// The number (or MRZ) fails its check digit or holds an impossible date.
    Invalid {
        why: String,
    },
    /// No number was found on the card.
    Unread,
}

/// Fields and checks from one read of a card.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentRead {
    pub fields: ReadFields,
    pub number_check: NumberCheck,
    /// The printed birth date disagrees with the one inside the number.
    pub birth_date_conflict: bool,
}

impl DocumentRead {
    /// Whether the read has what the kind needs (otherwise try a better capture).
    pub(crate) fn is_complete(&self, kind: DocumentKind) -> bool {
        match kind {
            DocumentKind::CnResidentId => {
                self.fields.name.is_some() && self.number_check != NumberCheck::Unread
            }
            DocumentKind::Passport => self.number_check != NumberCheck::Unread,
            DocumentKind::Id1Card => true,
        }
    }
}

/// Whether `read` can end the step. A number that fails its check (or disagrees with the
/// printed birth date) is more often a misread than a forgery, so it settles only when a second
/// capture reads the same number; `previous` is the read before this one.
pub(crate) fn settles(
    previous: Option<&DocumentRead>,
    read: &DocumentRead,
    kind: DocumentKind,
) -> bool {
    if !read.is_complete(kind) {
        return false;
    }
    let clean = read.number_check == NumberCheck::Valid && !read.birth_date_conflict;
    clean
        || kind == DocumentKind::Id1Card
        || previous
            .is_some_and(|p| p.fields.number.is_some() && p.fields.number == read.fields.number)
}

fn same_row(a: &TextLine, b: &TextLine) -> bool {
    (a.centre_y() - b.centre_y()).abs() < a.height().min(b.height()) * 0.6
}

/// The text after `label` in its box, or the nearest box to its right on the same row (boxes
/// are grown by the detector's unclip margin, so neighbours may overlap a little).
fn value_after<'a>(lines: &'a [TextLine], label: &str) -> Option<(String, &'a TextLine)> {
    let (i, l) = lines
        .iter()
        .enumerate()
        .find(|(_, l)| l.text.contains(label))?;
    let rest = l
        .text
        .split_once(label)
        .map(|(_, r)| r.trim())
        .unwrap_or("");
    if !rest.is_empty() {
        return Some((rest.to_string(), l));
    }
    lines
        .iter()
        .enumerate()
        .filter(|(j, o)| *j != i && same_row(l, o) && (o.bbox[0] + o.bbox[2]) / 2.0 > l.bbox[2])
        .min_by(|a, b| a.1.bbox[0].total_cmp(&b.1.bbox[0]))
        .map(|(_, o)| (o.text.trim().to_string(), o))
}

/// Undoes OCR confusions inside what should be a run of digits.
fn digitise(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| match c {
            'O' | 'o' | 'D' | 'Q' => '0',
            'I' | 'l' | 'i' | '|' => '1',
            'x' | '×' | 'Ｘ' => 'X',
            'S' => '5',
            'B' => '8',
            c => c,
        })
        .collect()
}

/// The longest run of digits (an X may end it) in `s`.
fn longest_number(s: &str) -> String {
    let s = digitise(s);
    let mut best = String::new();
    let mut run = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() || (c == 'X' && !run.is_empty()) {
            run.push(c);
            if c == 'X' {
                if run.len() > best.len() {
                    best = run.clone();
                }
                run.clear();
            }
        } else {
            if run.len() > best.len() {
                best = run.clone();
            }
            run.clear();
        }
    }
    if run.len() > best.len() {
        best = run;
    }
    best
}

/// Reads a China resident ID card's name, number and printed birth date; checks the number
/// (GB 11643 MOD 11-2, birth date no later than `today`).
pub fn read_cn_id(lines: &[TextLine], today: (i32, u32, u32)) -> DocumentRead {
    let name = value_after(lines, "姓名").map(|(v, _)| {
        v.chars()
            .filter(|c| ('\u{4e00}'..='\u{9fff}').contains(c) || *c == '·')
            .collect::<String>()
    });
    let name = name.filter(|n| n.chars().count() >= 2);
    // The number: the box after the label, else the longest digit run anywhere.
    let labelled = value_after(lines, "号码").map(|(v, _)| longest_number(&v));
    let number = labelled.filter(|n| n.len() >= 15).or_else(|| {
        lines
            .iter()
            .map(|l| longest_number(&l.text))
            .max_by_key(|n| n.len())
            .filter(|n| n.len() >= 15)
    });
    let printed_birth = value_after(lines, "出生").and_then(|(v, _)| parse_cn_date(&v));
    let (number_check, number_birth) = match &number {
        None => (NumberCheck::Unread, None),
        Some(n) => match validate_cn_id(n, today) {
            Ok(info) => (NumberCheck::Valid, Some(info.birth)),
            Err(e) => (
                NumberCheck::Invalid {
                    why: number_error_code(&e).into(),
                },
                None,
            ),
        },
    };
    let birth = number_birth.or(printed_birth);
    DocumentRead {
        birth_date_conflict: matches!((number_birth, printed_birth), (Some(a), Some(b)) if a != b),
        fields: ReadFields {
            name,
            number,
            birth_date: birth.map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}")),
        },
        number_check,
    }
}

fn number_error_code(e: &IdNumberError) -> &'static str {
    match e {
        IdNumberError::WrongLength { .. } => "wrong_length",
        IdNumberError::BadCharacter { .. } => "bad_character",
        IdNumberError::CheckDigit { .. } => "check_digit",
        IdNumberError::BadBirthDate { .. } => "birth_date",
    }
}

/// "1990年1月2日" (digits and units, spaces allowed) -> (1990, 1, 2).
fn parse_cn_date(s: &str) -> Option<(i32, u32, u32)> {
    let nums: Vec<u32> = s
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.parse().ok())
        .collect();
    match nums.as_slice() {
        [y, m, d, ..] if (1..=12).contains(m) && (1..=31).contains(d) => Some((*y as i32, *m, *d)),
        _ => None,
    }
}

/// Reads a passport's MRZ: the last two lines of 40+ MRZ characters, padded or cut to 44.
pub fn read_passport(lines: &[TextLine], today: (i32, u32, u32)) -> DocumentRead {
    let mrz: Vec<String> = lines
        .iter()
        .map(|l| {
            l.text
                .chars()
                .filter(|c| !c.is_whitespace())
                .map(|c| match c {
                    '«' | '‹' | '＜' => '<',
                    c => c.to_ascii_uppercase(),
                })
                .collect::<String>()
        })
        .filter(|t| {
            t.len() >= 40
                && t.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '<')
        })
        .collect();
    let fit = |s: &str| {
        let mut s: String = s.chars().take(44).collect();
        while s.len() < 44 {
            s.push('<');
        }
        s
    };
    let (fields, number_check) = match mrz.len() {
        n if n >= 2 => match parse_td3(
            &repair_td3_line1(&fit(&mrz[n - 2])),
            &repair_td3_line2(&fit(&mrz[n - 1])),
        ) {
            Ok(td3) => (passport_fields(&td3, today), NumberCheck::Valid),
            Err(e) => (
                ReadFields::default(),
                NumberCheck::Invalid {
                    why: mrz_error_code(&e).into(),
                },
            ),
        },
        _ => (ReadFields::default(), NumberCheck::Unread),
    };
    DocumentRead {
        fields,
        number_check,
        birth_date_conflict: false,
    }
}

/// OCR confuses O/0, I/1, S/5, B/8 and Z/2; an MRZ field's kind says which was printed. Only
/// fields that must be letters or must be digits are repaired; the document number and optional
/// data may hold both, and their check digits catch a misread there.
fn to_letter(c: char) -> char {
    match c {
        '0' => 'O',
        '1' => 'I',
        '5' => 'S',
        '8' => 'B',
        '2' => 'Z',
        c => c,
    }
}

fn to_digit(c: char) -> char {
    match c {
        'O' | 'D' | 'Q' => '0',
        'I' | 'L' => '1',
        'S' => '5',
        'B' => '8',
        'Z' => '2',
        c => c,
    }
}

/// TD3 line 1: issuing state (2-4) and names (5-43) are letters or fillers.
fn repair_td3_line1(line: &str) -> String {
    line.chars()
        .enumerate()
        .map(|(i, c)| if i >= 2 { to_letter(c) } else { c })
        .collect()
}

/// TD3 line 2: check digits, dates are digits; nationality (10-12) letters; sex (20) M/F/<.
fn repair_td3_line2(line: &str) -> String {
    line.chars()
        .enumerate()
        .map(|(i, c)| match i {
            9 | 13..=19 | 21..=27 | 42 | 43 => to_digit(c),
            10..=12 => to_letter(c),
            _ => c,
        })
        .collect()
}

fn passport_fields(td3: &Td3, today: (i32, u32, u32)) -> ReadFields {
    let name = if td3.given_names.is_empty() {
        td3.surname.clone()
    } else {
        format!("{} {}", td3.surname, td3.given_names)
    };
    ReadFields {
        name: Some(name),
        number: Some(td3.document_number.clone()),
        birth_date: td3
            .birth_date
            .resolve(today)
            .map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}")),
    }
}

fn mrz_error_code(e: &MrzError) -> &'static str {
    let text = format!("{e:?}");
    if text.contains("Check") {
        "check_digit"
    } else {
        "malformed"
    }
}

/// Identity data the relying party expects, in clear or as salted SHA-256 hashes
/// (`hex(sha256(salt || value))`, value normalised as in [`normalise`]), so the server never
/// needs the clear values. Never serialized; its `Debug` names the fields given, never their
/// values.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedIdentity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    /// `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<String>,
    /// Salt for the `*_sha256` fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birth_date_sha256: Option<String>,
}

/// How one expected field compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldMatch {
    Match,
    Mismatch,
    /// Expected but not read from the card.
    Unread,
}

/// Whitespace removed, ASCII upper-cased (names in Latin script, a final x of an ID number).
pub(crate) fn normalise(value: &str) -> String {
    value
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// `hex(sha256(salt || normalise(value)))`.
pub fn salted_hash(salt: &str, value: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(normalise(value).as_bytes());
    hex::encode(h.finalize())
}

impl std::fmt::Debug for ExpectedIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let given = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("ExpectedIdentity")
            .field("name", &given(&self.name))
            .field("number", &given(&self.number))
            .field("birth_date", &given(&self.birth_date))
            .field("hashed", &self.salt.is_some())
            .finish()
    }
}

impl ExpectedIdentity {
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.number.is_none()
            && self.birth_date.is_none()
            && self.name_sha256.is_none()
            && self.number_sha256.is_none()
            && self.birth_date_sha256.is_none()
    }

    /// Hashed fields need a salt; clear and hashed forms of one field are not both allowed;
    /// values are at most 256 bytes; a clear birth date is `YYYY-MM-DD`.
    pub fn validate(&self) -> Result<(), &'static str> {
        let all = [
            &self.name,
            &self.number,
            &self.birth_date,
            &self.salt,
            &self.name_sha256,
            &self.number_sha256,
            &self.birth_date_sha256,
        ];
        if all.into_iter().flatten().any(|v| v.len() > 256) {
            return Err("expected identity values are limited to 256 bytes");
        }
        if let Some(d) = &self.birth_date {
            let b = d.as_bytes();
            let shape = b.len() == 10
                && b[4] == b'-'
                && b[7] == b'-'
                && b.iter()
                    .enumerate()
                    .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
            if !shape {
                return Err("expected birth_date is YYYY-MM-DD");
            }
        }
        let hashed = self.name_sha256.is_some()
            || self.number_sha256.is_some()
            || self.birth_date_sha256.is_some();
        if hashed && self.salt.as_deref().is_none_or(str::is_empty) {
            return Err("expected *_sha256 fields need a non-empty salt");
        }
        if (self.name.is_some() && self.name_sha256.is_some())
            || (self.number.is_some() && self.number_sha256.is_some())
            || (self.birth_date.is_some() && self.birth_date_sha256.is_some())
        {
            return Err("give each expected field in clear or hashed, not both");
        }
        for h in [
            &self.name_sha256,
            &self.number_sha256,
            &self.birth_date_sha256,
        ]
        .into_iter()
        .flatten()
        {
            if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err("expected *_sha256 fields are 64 hex characters");
            }
        }
        Ok(())
    }

    /// Compares each expected field with what was read: (field name, result).
    pub fn compare(&self, read: &ReadFields) -> Vec<(&'static str, FieldMatch)> {
        let salt = self.salt.as_deref().unwrap_or("");
        let one = |clear: &Option<String>, hashed: &Option<String>, got: &Option<String>| {
            let want = match (clear, hashed) {
                (Some(c), _) => Some((normalise(c), false)),
                (None, Some(h)) => Some((h.to_ascii_lowercase(), true)),
                (None, None) => None,
            }?;
            Some(match got {
                None => FieldMatch::Unread,
                Some(g) => {
                    let ours = if want.1 {
                        salted_hash(salt, g)
                    } else {
                        normalise(g)
                    };
                    if ours == want.0 {
                        FieldMatch::Match
                    } else {
                        FieldMatch::Mismatch
                    }
                }
            })
        };
        [
            ("name", one(&self.name, &self.name_sha256, &read.name)),
            (
                "number",
                one(&self.number, &self.number_sha256, &read.number),
            ),
            (
                "birth_date",
                one(&self.birth_date, &self.birth_date_sha256, &read.birth_date),
            ),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str, x0: f32, y0: f32, x1: f32, y1: f32) -> TextLine {
        TextLine {
            text: text.into(),
            confidence: 0.9,
            bbox: [x0, y0, x1, y1],
        }
    }

    fn card_lines(name: &str, number: &str) -> Vec<TextLine> {
        vec![
            line("姓名", 40.0, 50.0, 120.0, 85.0),
            line(name, 145.0, 44.0, 260.0, 92.0),
            line("性别男民族汉", 40.0, 120.0, 400.0, 156.0),
            line("出生1990年3月7日", 40.0, 190.0, 420.0, 226.0),
            line("公民身份号码", 40.0, 450.0, 280.0, 485.0),
            line(number, 295.0, 442.0, 820.0, 488.0),
        ]
    }

    #[test]
    fn reads_name_number_and_birth_date_from_separate_boxes() {
        let read = read_cn_id(&card_lines("张伟", "11010519900307123X"), (2026, 1, 1));
        assert_eq!(read.fields.name.as_deref(), Some("张伟"));
        assert_eq!(read.fields.number.as_deref(), Some("11010519900307123X"));
        assert_eq!(read.fields.birth_date.as_deref(), Some("1990-03-07"));
        // 11010519900307123X: check char of the first 17 digits.
        let expected = crate::document::checks::gb11643_check_char("11010519900307123").unwrap();
        if expected == 'X' {
            assert_eq!(read.number_check, NumberCheck::Valid);
        } else {
            assert_eq!(
                read.number_check,
                NumberCheck::Invalid {
                    why: "check_digit".into()
                }
            );
        }
        assert!(read.is_complete(DocumentKind::CnResidentId));
    }

    #[test]
    fn digit_confusions_are_undone_and_the_label_may_share_the_box() {
        // The published example number 11010519491231002X, read with O for 0 and a lower x.
        let lines = vec![
            line("姓名 李娜", 40.0, 50.0, 300.0, 85.0),
            line("公民身份号码 11O1O519491231OO2x", 40.0, 450.0, 820.0, 485.0),
        ];
        let read = read_cn_id(&lines, (2026, 1, 1));
        assert_eq!(read.fields.name.as_deref(), Some("李娜"));
        assert_eq!(read.fields.number.as_deref(), Some("11010519491231002X"));
        assert_eq!(read.number_check, NumberCheck::Valid);
        assert_eq!(read.fields.birth_date.as_deref(), Some("1949-12-31"));
    }

    #[test]
    fn an_invalid_number_settles_only_when_read_twice_alike() {
        let read = |n: &str| read_cn_id(&card_lines("张伟", n), (2026, 1, 1));
        let kind = DocumentKind::CnResidentId;
        // Born 1990-03-07 as the card lines print.
        let first17 = "11010519900307123";
        let check = crate::document::checks::gb11643_check_char(first17).unwrap();
        let valid = read(&format!("{first17}{check}"));
        assert!(settles(None, &valid, kind));
        let (w1, w2) = if check == '1' {
            ('2', '3')
        } else if check == '2' {
            ('1', '3')
        } else {
            ('1', '2')
        };
        let wrong = read(&format!("{first17}{w1}"));
        assert!(!settles(None, &wrong, kind));
        assert!(!settles(
            Some(&read(&format!("{first17}{w2}"))),
            &wrong,
            kind
        ));
        assert!(settles(Some(&wrong.clone()), &wrong, kind));
    }

    #[test]
    fn a_card_without_a_number_is_unread_and_incomplete() {
        let read = read_cn_id(&[line("姓名", 40.0, 50.0, 120.0, 85.0)], (2026, 1, 1));
        assert_eq!(read.number_check, NumberCheck::Unread);
        assert!(!read.is_complete(DocumentKind::CnResidentId));
    }

    #[test]
    fn passport_mrz_lines_are_found_and_checked() {
        // ICAO 9303 part 4 specimen.
        let l1 = "P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<";
        let l2 = "L898902C36UTO7408122F1204159ZE184226B<<<<<10";
        let lines = vec![
            line("PASSPORT", 40.0, 20.0, 200.0, 50.0),
            line(l1, 20.0, 440.0, 830.0, 470.0),
            line(l2, 20.0, 480.0, 830.0, 510.0),
        ];
        let read = read_passport(&lines, (2026, 1, 1));
        assert_eq!(read.number_check, NumberCheck::Valid);
        assert_eq!(read.fields.name.as_deref(), Some("ERIKSSON ANNA MARIA"));
        assert_eq!(read.fields.number.as_deref(), Some("L898902C3"));
        assert_eq!(read.fields.birth_date.as_deref(), Some("1974-08-12"));
        let mut bad = l2.to_string();
        bad.replace_range(9..10, "7");
        let read = read_passport(
            &[line(l1, 0.0, 0.0, 1.0, 1.0), line(&bad, 0.0, 2.0, 1.0, 3.0)],
            (2026, 1, 1),
        );
        assert_eq!(
            read.number_check,
            NumberCheck::Invalid {
                why: "check_digit".into()
            }
        );
    }

    #[test]
    fn mrz_letter_and_digit_confusions_are_repaired_by_field() {
        let l1 = "P<UT0ERIKSS0N<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<";
        let l2 = "L898902C36UT074O8122F12O4159ZE184226B<<<<<1O";
        let read = read_passport(
            &[line(l1, 0.0, 0.0, 1.0, 1.0), line(l2, 0.0, 2.0, 1.0, 3.0)],
            (2026, 1, 1),
        );
        assert_eq!(read.number_check, NumberCheck::Valid);
        assert_eq!(read.fields.name.as_deref(), Some("ERIKSSON ANNA MARIA"));
    }

    #[test]
    fn expected_identity_in_clear_and_hashed() {
        let read = ReadFields {
            name: Some("张伟".into()),
            number: Some("11010519491231002X".into()),
            birth_date: Some("1949-12-31".into()),
        };
        let clear = ExpectedIdentity {
            name: Some("张伟".into()),
            number: Some("11010519491231002x".into()),
            ..Default::default()
        };
        assert_eq!(
            clear.compare(&read),
            vec![("name", FieldMatch::Match), ("number", FieldMatch::Match)]
        );
        let hashed = ExpectedIdentity {
            salt: Some("s3cret".into()),
            name_sha256: Some(salted_hash("s3cret", "张伟")),
            number_sha256: Some(salted_hash("s3cret", "11010519491231002Y")),
            ..Default::default()
        };
        assert!(hashed.validate().is_ok());
        assert_eq!(
            hashed.compare(&read),
            vec![
                ("name", FieldMatch::Match),
                ("number", FieldMatch::Mismatch)
            ]
        );
        let unread = ExpectedIdentity {
            birth_date: Some("1949-12-31".into()),
            ..Default::default()
        };
        assert_eq!(
            unread.compare(&ReadFields::default()),
            vec![("birth_date", FieldMatch::Unread)]
        );
        let debug = format!("{clear:?}");
        assert!(
            !debug.contains("张伟") && !debug.contains("1101"),
            "{debug}"
        );
        let bad_date = ExpectedIdentity {
            birth_date: Some("1990/03/07".into()),
            ..Default::default()
        };
        assert!(bad_date.validate().is_err());
        let huge = ExpectedIdentity {
            name: Some("x".repeat(300)),
            ..Default::default()
        };
        assert!(huge.validate().is_err());
        let no_salt = ExpectedIdentity {
            name_sha256: Some("ab".repeat(32)),
            ..Default::default()
        };
        assert!(no_salt.validate().is_err());
    }
}
