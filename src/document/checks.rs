//! Identity-number checks: the check characters that identity documents carry so that a misread
//! or a made-up number can be caught without asking anyone.
//!
//! Two schemes are covered:
//!
//! * **China resident identity number** (GB 11643-1999, 18 characters). The 18th character is an
//!   ISO 7064 MOD 11-2 check character over the first 17 digits, and characters 7-14 are the
//!   holder's birth date `YYYYMMDD`. [`validate_cn_id`] checks the length, the characters, the
//!   check character and that the birth date is a real calendar date in a plausible range.
//! * **ICAO 9303 machine-readable zone** (the two 44-character lines at the foot of a passport
//!   photo page, "TD3"). The document number, birth date, expiry date and optional data each carry
//!   a 7-3-1 weighted check digit, and a composite check digit covers all of them.
//!   [`icao_check_digit`] computes one; [`parse_td3`] checks every one of them and splits the
//!   lines into fields.
//!
//! Why: a number read from a card (by OCR, by NFC or typed by a person) whose check character
//! does not match was misread, mistyped or forged. Either way it must not be matched against
//! anything; the caller reports `ID_NUMBER_INVALID` (retryable: a re-scan fixes a misread). A
//! check character that matches says nothing about whether the document is genuine: it only
//! catches every single-character error and most transpositions.
//!
//! Everything here is a pure function of its arguments: no clock (callers pass `today` as
//! `(year, month, day)`), no I/O, no allocation beyond the returned values. Inputs are taken as
//! given: no trimming, no case folding (except the final `x` of a Chinese identity number, which
//! people commonly type in lowercase); an OCR layer normalises before calling.

use thiserror::Error;

/// Sex as encoded in an identity number or an MRZ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Sex {
    Male,
    Female,
}

// ---------------------------------------------------------------------------------------------
// Calendar helpers (proleptic Gregorian).

fn is_leap_year(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Days in `month` of `year`, or 0 when `month` is not 1-12.
fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

fn is_real_date(year: i32, month: u32, day: u32) -> bool {
    day >= 1 && day <= days_in_month(year, month)
}

/// Value of a run of ASCII digits (callers have checked that they are digits).
fn digits_value(digits: &str) -> u32 {
    digits
        .bytes()
        .fold(0, |acc, b| acc * 10 + u32::from(b.wrapping_sub(b'0')))
}

// ---------------------------------------------------------------------------------------------
// China resident identity number, GB 11643-1999.

/// ISO 7064 MOD 11-2 weights for positions 1-17: 2^(18-i) mod 11.
const GB11643_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];

/// Check character for each remainder of the weighted sum mod 11.
const GB11643_CHECK_CHARS: &[u8; 11] = b"10X98765432";

/// Earliest birth date [`validate_cn_id`] accepts.
///
/// GB 11643 itself sets no lower bound, and the standard's own worked example
/// (`440524188001010014`) is born 1880-01-01, so 1900 would be too strict. 1870-01-01 leaves room
/// for that example and any real holder while still rejecting misreads such as a year of `1080`.
pub(crate) const CN_ID_MIN_BIRTH: (i32, u32, u32) = (1870, 1, 1);

/// Length of a (second-generation) China resident identity number.
pub(crate) const CN_ID_LEN: usize = 18;

/// The check character (`'0'`-`'9'` or `'X'`) for the first 17 digits of a China resident
/// identity number: ISO 7064 MOD 11-2, as GB 11643-1999 specifies. `None` unless `first17` is
/// exactly 17 ASCII digits.
pub(crate) fn gb11643_check_char(first17: &str) -> Option<char> {
    let bytes = first17.as_bytes();
    if bytes.len() != 17 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let sum: u32 = bytes
        .iter()
        .zip(GB11643_WEIGHTS)
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    Some(char::from(GB11643_CHECK_CHARS[(sum % 11) as usize]))
}

/// Why an identity number was rejected. Every variant maps to `ID_NUMBER_INVALID`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum IdNumberError {
    /// Not 18 characters (counted as characters, not bytes). A 15-digit first-generation number
    /// (no check character; those cards stopped being valid in 2013) lands here too.
    #[error("identity number has {length} characters, expected 18")]
    WrongLength { length: usize },
    /// A character that is not a digit, or an `X` anywhere but the last position.
    /// `position` is 1-based.
    #[error("identity number has {found:?} at position {position}; expected a digit (or X last)")]
    BadCharacter { position: usize, found: char },
    /// The check character does not match the first 17 digits: misread, mistyped or made up.
    #[error("identity number check character is {found}, expected {expected}")]
    CheckDigit { expected: char, found: char },
    /// Characters 7-14 are not a real calendar date between [`CN_ID_MIN_BIRTH`] and today.
    #[error("identity number birth date {date} is not a real date between 1870-01-01 and today")]
    BadBirthDate { date: String },
}

/// What a valid China resident identity number says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CnIdInfo {
    /// The number, with a lowercase final `x` made uppercase.
    pub number: String,
    /// Administrative division code of the place of first registration (characters 1-6).
    pub region: String,
    /// Birth date `(year, month, day)` from characters 7-14.
    pub birth: (i32, u32, u32),
    /// From the 17th digit: odd is male, even is female.
    pub sex: Sex,
}

/// Validate a China resident identity number (GB 11643-1999): 18 characters, the first 17
/// digits, the last a digit or `X` (a lowercase `x` is accepted and normalised), a matching MOD
/// 11-2 check character, and a birth date that is a real calendar date between
/// [`CN_ID_MIN_BIRTH`] and `today` (both inclusive), `today` being `(year, month, day)`.
///
/// The checks run in that order, so a misread birth-date digit is reported as
/// [`IdNumberError::CheckDigit`] (the check character catches it first). The region code is
/// returned but not checked against the list of divisions, which changes over time.
pub(crate) fn validate_cn_id(
    number: &str,
    today: (i32, u32, u32),
) -> Result<CnIdInfo, IdNumberError> {
    let length = number.chars().count();
    if length != CN_ID_LEN {
        return Err(IdNumberError::WrongLength { length });
    }
    let mut normalised = String::with_capacity(CN_ID_LEN);
    for (i, c) in number.chars().enumerate() {
        let allowed = c.is_ascii_digit() || (i == CN_ID_LEN - 1 && (c == 'X' || c == 'x'));
        if !allowed {
            return Err(IdNumberError::BadCharacter {
                position: i + 1,
                found: c,
            });
        }
        normalised.push(c.to_ascii_uppercase());
    }
    // All ASCII from here on, so byte slicing is character slicing.
    let found = char::from(normalised.as_bytes()[17]);
    let expected = gb11643_check_char(&normalised[..17])
        .ok_or(IdNumberError::BadCharacter { position: 1, found })?; // unreachable: 17 digits
    if expected != found {
        return Err(IdNumberError::CheckDigit { expected, found });
    }

    let year = digits_value(&normalised[6..10]) as i32;
    let month = digits_value(&normalised[10..12]);
    let day = digits_value(&normalised[12..14]);
    let birth = (year, month, day);
    if !is_real_date(year, month, day) || birth < CN_ID_MIN_BIRTH || birth > today {
        return Err(IdNumberError::BadBirthDate {
            date: normalised[6..14].to_string(),
        });
    }

    let sex = if (normalised.as_bytes()[16] - b'0') % 2 == 1 {
        Sex::Male
    } else {
        Sex::Female
    };
    Ok(CnIdInfo {
        region: normalised[..6].to_string(),
        number: normalised,
        birth,
        sex,
    })
}

// ---------------------------------------------------------------------------------------------
// ICAO 9303 machine-readable zone.

/// The ICAO 9303 check digit of an MRZ field: each character's value (`0`-`9` as themselves,
/// `A`-`Z` as 10-35, the filler `<` as 0) times the weights 7, 3, 1 repeating, summed, mod 10.
/// `None` if the field holds any other character (lowercase letters included). An empty field
/// has check digit 0.
pub(crate) fn icao_check_digit(field: &str) -> Option<u8> {
    const WEIGHTS: [u32; 3] = [7, 3, 1];
    let mut sum = 0u32;
    for (i, b) in field.bytes().enumerate() {
        let value = match b {
            b'0'..=b'9' => b - b'0',
            b'A'..=b'Z' => b - b'A' + 10,
            b'<' => 0,
            _ => return None, // includes the bytes of any non-ASCII character
        };
        sum = (sum + u32::from(value) * WEIGHTS[i % 3]) % 10;
    }
    Some(sum as u8)
}

/// Length of each of the two lines of a TD3 (passport) MRZ.
pub(crate) const TD3_LINE_LEN: usize = 44;

/// A date in an MRZ: two-digit year, month, day. The century is not in the MRZ; see
/// [`MrzDate::expiry`] and [`MrzBirthDate::resolve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MrzDate {
    pub yy: u8,
    pub month: u8,
    pub day: u8,
}

impl MrzDate {
    /// The full expiry date, taking the century that puts the year within 50 years either side of
    /// `today`'s year (a passport is valid for at most ten years).
    pub fn expiry(&self, today: (i32, u32, u32)) -> (i32, u32, u32) {
        let mut year = today.0 - today.0.rem_euclid(100) + i32::from(self.yy);
        if year < today.0 - 50 {
            year += 100;
        } else if year >= today.0 + 50 {
            year -= 100;
        }
        (year, u32::from(self.month), u32::from(self.day))
    }
}

/// A birth date in an MRZ. ICAO 9303 part 3 fills an unknown day, month or year with `<<`, so
/// each part may be missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct MrzBirthDate {
    pub yy: Option<u8>,
    pub month: Option<u8>,
    pub day: Option<u8>,
}

impl MrzBirthDate {
    /// The full birth year: the latest century that does not put the birth after `today` (an
    /// unknown month or day counts as the first). `None` when the year is unknown.
    pub(crate) fn year(&self, today: (i32, u32, u32)) -> Option<i32> {
        let yy = i32::from(self.yy?);
        let mut year = today.0 - today.0.rem_euclid(100) + yy;
        let month = u32::from(self.month.unwrap_or(1));
        let day = u32::from(self.day.unwrap_or(1));
        if (year, month, day) > today {
            year -= 100;
        }
        Some(year)
    }

    /// The full birth date when every part is known, the century chosen as in [`Self::year`].
    /// A `00` year resolved to 1900 keeps a 29 February it was given (see [`parse_td3`]).
    pub(crate) fn resolve(&self, today: (i32, u32, u32)) -> Option<(i32, u32, u32)> {
        Some((
            self.year(today)?,
            u32::from(self.month?),
            u32::from(self.day?),
        ))
    }
}

/// The fields of a TD3 (passport) MRZ, fillers removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Td3 {
    /// `P` plus an optional second letter at the issuing state's discretion, e.g. `P`, `PD`.
    pub document_code: String,
    /// Three-letter issuing state or organisation code, trailing fillers removed (`D<<` -> `D`).
    pub issuing_state: String,
    /// Primary identifier; `<` inside it becomes a space (`VAN<DER<BERG` -> `VAN DER BERG`).
    pub surname: String,
    /// Secondary identifier, names separated by single spaces; empty when the holder has one name.
    pub given_names: String,
    /// Document number, trailing fillers removed.
    pub document_number: String,
    /// Nationality code, trailing fillers removed.
    pub nationality: String,
    pub birth_date: MrzBirthDate,
    /// `None` for `<` or `X` (unspecified).
    pub sex: Option<Sex>,
    pub expiry_date: MrzDate,
    /// Personal number or other optional data, trailing fillers removed; may be empty.
    pub optional_data: String,
}

/// Why an MRZ was rejected. The `*Check` variants are check-digit mismatches (misread or forged:
/// `ID_NUMBER_INVALID`); the others are malformed fields. `line` and `position` are 1-based.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum MrzError {
    #[error("MRZ line {line} has {length} characters, expected 44")]
    WrongLength { line: u8, length: usize },
    #[error(
        "MRZ line {line} has {found:?} at position {position}; only A-Z, 0-9 and < are allowed"
    )]
    BadCharacter {
        line: u8,
        position: usize,
        found: char,
    },
    #[error("MRZ document code {found:?} is not a passport code (P, then a letter or <)")]
    NotPassport { found: String },
    #[error("MRZ issuing state {found:?} is not a letter code")]
    BadIssuingState { found: String },
    #[error("MRZ name field {found:?} holds something other than letters and <")]
    BadName { found: String },
    #[error("MRZ name field has no primary identifier (surname)")]
    MissingName,
    #[error("MRZ document number is empty")]
    MissingDocumentNumber,
    #[error("MRZ document number check digit is {found}, expected {expected}")]
    DocumentNumberCheck { expected: char, found: char },
    #[error("MRZ nationality {found:?} is not a letter code")]
    BadNationality { found: String },
    #[error("MRZ birth date check digit is {found}, expected {expected}")]
    BirthDateCheck { expected: char, found: char },
    #[error("MRZ birth date {found:?} is not a date (YYMMDD, unknown parts <<)")]
    BadBirthDate { found: String },
    #[error("MRZ sex {found:?} is not M, F, X or <")]
    BadSex { found: char },
    #[error("MRZ expiry date check digit is {found}, expected {expected}")]
    ExpiryDateCheck { expected: char, found: char },
    #[error("MRZ expiry date {found:?} is not a date (YYMMDD)")]
    BadExpiryDate { found: String },
    #[error("MRZ optional data check digit is {found}, expected {expected}")]
    OptionalDataCheck { expected: char, found: char },
    #[error("MRZ composite check digit is {found}, expected {expected}")]
    CompositeCheck { expected: char, found: char },
}

/// Length and character set of one MRZ line; after this it is all ASCII.
fn mrz_line(text: &str, line: u8) -> Result<&str, MrzError> {
    let length = text.chars().count();
    if length != TD3_LINE_LEN {
        return Err(MrzError::WrongLength { line, length });
    }
    for (i, c) in text.chars().enumerate() {
        if !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '<') {
            return Err(MrzError::BadCharacter {
                line,
                position: i + 1,
                found: c,
            });
        }
    }
    Ok(text)
}

/// `Some((expected, found))` when `check` is not the check digit of `data`.
fn check_mismatch(data: &str, check: u8) -> Option<(char, char)> {
    // `data` has passed `mrz_line`, so the digit always exists.
    let expected = char::from(b'0' + icao_check_digit(data).unwrap_or(0));
    let found = char::from(check);
    (expected != found).then_some((expected, found))
}

fn trim_fillers(field: &str) -> &str {
    field.trim_end_matches('<')
}

/// Letters then fillers, at least one letter (`UTO`, `D<<`).
fn is_letter_code(field: &str) -> bool {
    let code = trim_fillers(field);
    !code.is_empty() && code.bytes().all(|b| b.is_ascii_uppercase())
}

/// `<` runs become single spaces; no leading or trailing space.
fn mrz_words(field: &str) -> String {
    field
        .split('<')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A two-digit year could be a leap year unless it is a century that is not one. `00` may be
/// 2000 (leap), so 29 February is allowed for it; only 1900 would be wrong, and a 1900 birth date
/// on a passport in use is not a case worth rejecting real ones for.
fn two_digit_days_in_month(yy: u8, month: u8) -> u32 {
    let year = 2000 + i32::from(yy % 4); // 2000 is a leap year, 2001-2003 are not
    days_in_month(year, u32::from(month))
}

/// A pair of digits, `None` for `<<`, `Err` for anything else (one digit and one filler).
fn date_part(pair: &str) -> Result<Option<u8>, ()> {
    match pair.as_bytes() {
        [b'<', b'<'] => Ok(None),
        [a, b] if a.is_ascii_digit() && b.is_ascii_digit() => {
            Ok(Some((a - b'0') * 10 + (b - b'0')))
        }
        _ => Err(()),
    }
}

fn parse_birth(field: &str) -> Option<MrzBirthDate> {
    let yy = date_part(&field[0..2]).ok()?;
    let month = date_part(&field[2..4]).ok()?;
    let day = date_part(&field[4..6]).ok()?;
    if let Some(m) = month {
        if !(1..=12).contains(&m) {
            return None;
        }
    }
    if let Some(d) = day {
        let max = match month {
            Some(m) => match yy {
                Some(y) => two_digit_days_in_month(y, m),
                None => days_in_month(2000, u32::from(m)),
            },
            None => 31,
        };
        if d == 0 || u32::from(d) > max {
            return None;
        }
    }
    Some(MrzBirthDate { yy, month, day })
}

fn parse_expiry(field: &str) -> Option<MrzDate> {
    let yy = date_part(&field[0..2]).ok()??;
    let month = date_part(&field[2..4]).ok()??;
    let day = date_part(&field[4..6]).ok()??;
    let max = if (1..=12).contains(&month) {
        two_digit_days_in_month(yy, month)
    } else {
        0
    };
    (day >= 1 && u32::from(day) <= max).then_some(MrzDate { yy, month, day })
}

/// Parse and check a TD3 (passport) MRZ, ICAO 9303 part 4.
///
/// Line 1: document code (1-2), issuing state (3-5), name (6-44: primary identifier, `<<`,
/// secondary identifier). Line 2: document number (1-9) and its check digit (10), nationality
/// (11-13), birth date `YYMMDD` (14-19) and check (20), sex (21), expiry date (22-27) and check
/// (28), optional data (29-42) and check (43), composite check (44) over positions 1-10, 14-20
/// and 22-43.
///
/// When the optional data is all fillers its check digit may be `<` or `0`. Check digits are
/// verified first, field by field and then the composite, so a misread digit inside a field
/// names that field; the field formats are checked after. Lines must be exactly 44 characters of
/// `A`-`Z`, `0`-`9` and `<`: trim and uppercase OCR output before calling. A name truncated to
/// fit the line cannot be detected and is returned as it stands.
pub(crate) fn parse_td3(line1: &str, line2: &str) -> Result<Td3, MrzError> {
    let l1 = mrz_line(line1, 1)?;
    let l2 = mrz_line(line2, 2)?;
    let b2 = l2.as_bytes();

    let code = &l1[0..2];
    let code_bytes = code.as_bytes();
    if code_bytes[0] != b'P' || !(code_bytes[1].is_ascii_uppercase() || code_bytes[1] == b'<') {
        return Err(MrzError::NotPassport {
            found: code.to_string(),
        });
    }

    // Check digits.
    let (doc_field, nat_field) = (&l2[0..9], &l2[10..13]);
    let (birth_field, expiry_field, optional_field) = (&l2[13..19], &l2[21..27], &l2[28..42]);
    if let Some((expected, found)) = check_mismatch(doc_field, b2[9]) {
        return Err(MrzError::DocumentNumberCheck { expected, found });
    }
    if let Some((expected, found)) = check_mismatch(birth_field, b2[19]) {
        return Err(MrzError::BirthDateCheck { expected, found });
    }
    if let Some((expected, found)) = check_mismatch(expiry_field, b2[27]) {
        return Err(MrzError::ExpiryDateCheck { expected, found });
    }
    let optional_blank = trim_fillers(optional_field).is_empty();
    if !(optional_blank && b2[42] == b'<') {
        if let Some((expected, found)) = check_mismatch(optional_field, b2[42]) {
            return Err(MrzError::OptionalDataCheck { expected, found });
        }
    }
    let composite = [&l2[0..10], &l2[13..20], &l2[21..43]].concat();
    if let Some((expected, found)) = check_mismatch(&composite, b2[43]) {
        return Err(MrzError::CompositeCheck { expected, found });
    }

    // Field formats.
    let state_field = &l1[2..5];
    if !is_letter_code(state_field) {
        return Err(MrzError::BadIssuingState {
            found: state_field.to_string(),
        });
    }
    let name_field = &l1[5..44];
    if !name_field
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b == b'<')
    {
        return Err(MrzError::BadName {
            found: name_field.to_string(),
        });
    }
    let (primary, secondary) = name_field.split_once("<<").unwrap_or((name_field, ""));
    let surname = mrz_words(primary);
    if surname.is_empty() {
        return Err(MrzError::MissingName);
    }
    let document_number = trim_fillers(doc_field);
    if document_number.is_empty() {
        return Err(MrzError::MissingDocumentNumber);
    }
    if !is_letter_code(nat_field) {
        return Err(MrzError::BadNationality {
            found: nat_field.to_string(),
        });
    }
    let birth_date = parse_birth(birth_field).ok_or_else(|| MrzError::BadBirthDate {
        found: birth_field.to_string(),
    })?;
    let sex = match b2[20] {
        b'M' => Some(Sex::Male),
        b'F' => Some(Sex::Female),
        b'<' | b'X' => None,
        other => {
            return Err(MrzError::BadSex {
                found: char::from(other),
            })
        }
    };
    let expiry_date = parse_expiry(expiry_field).ok_or_else(|| MrzError::BadExpiryDate {
        found: expiry_field.to_string(),
    })?;

    Ok(Td3 {
        document_code: trim_fillers(code).to_string(),
        issuing_state: trim_fillers(state_field).to_string(),
        surname,
        given_names: mrz_words(secondary),
        document_number: document_number.to_string(),
        nationality: trim_fillers(nat_field).to_string(),
        birth_date,
        sex,
        expiry_date,
        optional_data: trim_fillers(optional_field).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TODAY: (i32, u32, u32) = (2026, 5, 1);

    /// GB 11643-1999's worked example: born 1949-12-31, female, check character X.
    const CN_EXAMPLE_X: &str = "11010519491231002X";
    /// GB 11643-1999's other worked example: born 1880-01-01, male.
    const CN_EXAMPLE_1880: &str = "440524188001010014";

    /// ICAO 9303 part 4 TD3 specimen.
    const TD3_L1: &str = "P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<";
    const TD3_L2: &str = "L898902C36UTO7408122F1204159ZE184226B<<<<<10";

    /// First 17 digits plus their correct check character.
    fn with_check(first17: &str) -> String {
        format!("{first17}{}", gb11643_check_char(first17).unwrap())
    }

    /// `s` with the character at 0-based `index` replaced.
    fn replace_at(s: &str, index: usize, c: char) -> String {
        let mut out: Vec<char> = s.chars().collect();
        out[index] = c;
        out.into_iter().collect()
    }

    /// A TD3 line 2 built from fields, every check digit computed (the optional-data check is
    /// `opt_check` when given).
    fn line2(
        doc: &str,
        nat: &str,
        birth: &str,
        sex: char,
        expiry: &str,
        optional: &str,
        opt_check: Option<char>,
    ) -> String {
        let d = |f: &str| char::from(b'0' + icao_check_digit(f).unwrap());
        let doc = format!("{doc:<<9}");
        let optional = format!("{optional:<<14}");
        let opt_check = opt_check.unwrap_or_else(|| d(&optional));
        let mut l = format!(
            "{doc}{}{nat}{birth}{}{sex}{expiry}{}{optional}{opt_check}",
            d(&doc),
            d(birth),
            d(expiry)
        );
        let composite = [&l[0..10], &l[13..20], &l[21..43]].concat();
        l.push(d(&composite));
        assert_eq!(l.len(), 44, "{l}");
        l
    }

    // ----- calendar

    #[test]
    fn leap_years_follow_the_gregorian_rule() {
        assert!(is_leap_year(2000));
        assert!(is_leap_year(2024));
        assert!(is_leap_year(1904));
        assert!(!is_leap_year(1900));
        assert!(!is_leap_year(2100));
        assert!(!is_leap_year(2023));
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(2023, 2), 28);
        assert_eq!(days_in_month(2023, 4), 30);
        assert_eq!(days_in_month(2023, 12), 31);
        assert_eq!(days_in_month(2023, 0), 0);
        assert_eq!(days_in_month(2023, 13), 0);
        assert!(!is_real_date(2023, 6, 0));
        assert!(!is_real_date(2023, 6, 31));
        assert!(is_real_date(2023, 7, 31));
    }

    // ----- GB 11643

    #[test]
    fn gb11643_check_char_matches_the_published_examples() {
        assert_eq!(gb11643_check_char("11010519491231002"), Some('X'));
        assert_eq!(gb11643_check_char("44052418800101001"), Some('4'));
        // By hand for the first: weighted sum 167, 167 mod 11 = 2, "10X98765432"[2] = 'X'.
        let sum: u32 = "11010519491231002"
            .bytes()
            .zip(GB11643_WEIGHTS)
            .map(|(b, w)| u32::from(b - b'0') * w)
            .sum();
        assert_eq!(sum, 167);
    }

    #[test]
    fn gb11643_weights_are_powers_of_two_mod_11() {
        for (i, w) in GB11643_WEIGHTS.iter().enumerate() {
            let expected = (0..(17 - i)).fold(1u32, |acc, _| acc * 2 % 11);
            assert_eq!(*w, expected, "position {}", i + 1);
        }
    }

    #[test]
    fn gb11643_check_char_rejects_malformed_input() {
        assert_eq!(gb11643_check_char(""), None);
        assert_eq!(gb11643_check_char("1101051949123100"), None); // 16
        assert_eq!(gb11643_check_char("110105194912310021"), None); // 18
        assert_eq!(gb11643_check_char("1101051949123100X"), None);
        assert_eq!(gb11643_check_char("11010519491231 02"), None);
        // 17 characters but not 17 bytes of digits.
        assert_eq!(gb11643_check_char("１1010519491231002"), None);
    }

    #[test]
    fn gb11643_catches_every_single_digit_error_and_adjacent_transposition() {
        for example in [CN_EXAMPLE_X, CN_EXAMPLE_1880] {
            let first17 = &example[..17];
            let good = gb11643_check_char(first17).unwrap();
            for i in 0..17 {
                for d in b'0'..=b'9' {
                    if d == first17.as_bytes()[i] {
                        continue;
                    }
                    let bad = replace_at(first17, i, char::from(d));
                    assert_ne!(gb11643_check_char(&bad), Some(good), "{bad}");
                }
            }
            for i in 0..16 {
                let b = first17.as_bytes();
                if b[i] == b[i + 1] {
                    continue;
                }
                let mut swapped = b.to_vec();
                swapped.swap(i, i + 1);
                let swapped = String::from_utf8(swapped).unwrap();
                assert_ne!(gb11643_check_char(&swapped), Some(good), "{swapped}");
            }
        }
    }

    #[test]
    fn the_standard_example_with_x_is_valid() {
        let info = validate_cn_id(CN_EXAMPLE_X, TODAY).unwrap();
        assert_eq!(
            info,
            CnIdInfo {
                number: CN_EXAMPLE_X.to_string(),
                region: "110105".to_string(),
                birth: (1949, 12, 31),
                sex: Sex::Female,
            }
        );
    }

    #[test]
    fn the_1880_standard_example_is_valid() {
        let info = validate_cn_id(CN_EXAMPLE_1880, TODAY).unwrap();
        assert_eq!(info.number, CN_EXAMPLE_1880);
        assert_eq!(info.region, "440524");
        assert_eq!(info.birth, (1880, 1, 1));
        assert_eq!(info.sex, Sex::Male);
    }

    #[test]
    fn lowercase_x_is_accepted_and_normalised() {
        let info = validate_cn_id("11010519491231002x", TODAY).unwrap();
        assert_eq!(info.number, CN_EXAMPLE_X);
    }

    #[test]
    fn wrong_length_counts_characters() {
        for (number, length) in [
            ("", 0),
            ("11010519491231002", 17),
            ("11010519491231002X0", 19),
            ("110105491231002", 15), // first-generation number
        ] {
            assert_eq!(
                validate_cn_id(number, TODAY),
                Err(IdNumberError::WrongLength { length }),
                "{number}"
            );
        }
        // 18 characters, more than 18 bytes: a bad character, not a wrong length.
        assert_eq!(
            validate_cn_id("１1010519491231002X", TODAY),
            Err(IdNumberError::BadCharacter {
                position: 1,
                found: '１'
            })
        );
    }

    #[test]
    fn bad_characters_are_located() {
        assert_eq!(
            validate_cn_id("1101051949123100XX", TODAY),
            Err(IdNumberError::BadCharacter {
                position: 17,
                found: 'X'
            })
        );
        assert_eq!(
            validate_cn_id("11010519491231002Y", TODAY),
            Err(IdNumberError::BadCharacter {
                position: 18,
                found: 'Y'
            })
        );
        assert_eq!(
            validate_cn_id(" 1010519491231002X", TODAY),
            Err(IdNumberError::BadCharacter {
                position: 1,
                found: ' '
            })
        );
        assert_eq!(
            validate_cn_id("110105-9491231002X", TODAY),
            Err(IdNumberError::BadCharacter {
                position: 7,
                found: '-'
            })
        );
    }

    #[test]
    fn a_wrong_check_character_is_reported_with_both_values() {
        assert_eq!(
            validate_cn_id("110105194912310021", TODAY),
            Err(IdNumberError::CheckDigit {
                expected: 'X',
                found: '1'
            })
        );
        assert_eq!(
            validate_cn_id("44052418800101001X", TODAY),
            Err(IdNumberError::CheckDigit {
                expected: '4',
                found: 'X'
            })
        );
        // A misread digit in the body (1949 -> 1948) is caught by the check character.
        assert!(matches!(
            validate_cn_id("11010519481231002X", TODAY),
            Err(IdNumberError::CheckDigit { found: 'X', .. })
        ));
    }

    #[test]
    fn birth_dates_must_be_real_calendar_dates() {
        let bad = |date: &str| {
            let number = with_check(&format!("110105{date}002"));
            assert_eq!(
                validate_cn_id(&number, TODAY),
                Err(IdNumberError::BadBirthDate {
                    date: date.to_string()
                }),
                "{number}"
            );
        };
        bad("19990229"); // not a leap year
        bad("19000229"); // century, not a leap year
        bad("19491301"); // month 13
        bad("19490001"); // month 0
        bad("19491200"); // day 0
        bad("19491232"); // day 32
        bad("19490431"); // April has 30 days
        bad("00000101"); // year 0

        let good = |date: &str, birth: (i32, u32, u32)| {
            let number = with_check(&format!("110105{date}002"));
            assert_eq!(
                validate_cn_id(&number, TODAY).unwrap().birth,
                birth,
                "{number}"
            );
        };
        good("20000229", (2000, 2, 29)); // 400-year leap
        good("19960229", (1996, 2, 29));
        good("19490430", (1949, 4, 30));
    }

    #[test]
    fn birth_dates_must_lie_between_1870_and_today() {
        let number = |date: &str| with_check(&format!("110105{date}002"));
        assert_eq!(
            validate_cn_id(&number("18691231"), TODAY),
            Err(IdNumberError::BadBirthDate {
                date: "18691231".to_string()
            })
        );
        assert_eq!(
            validate_cn_id(&number("18700101"), TODAY).unwrap().birth,
            (1870, 1, 1)
        );
        // Today is allowed, tomorrow is not.
        assert_eq!(
            validate_cn_id(&number("20260501"), TODAY).unwrap().birth,
            (2026, 5, 1)
        );
        for future in ["20260502", "20260601", "20270101", "29991231"] {
            assert_eq!(
                validate_cn_id(&number(future), TODAY),
                Err(IdNumberError::BadBirthDate {
                    date: future.to_string()
                }),
                "{future}"
            );
        }
        // The same number is valid once its birth date has passed.
        assert!(validate_cn_id(&number("20260502"), (2026, 5, 2)).is_ok());
    }

    #[test]
    fn sex_comes_from_the_seventeenth_digit() {
        for d in 0..10u8 {
            let number = with_check(&format!("1101051949123100{d}"));
            let expected = if d % 2 == 1 { Sex::Male } else { Sex::Female };
            assert_eq!(
                validate_cn_id(&number, TODAY).unwrap().sex,
                expected,
                "{number}"
            );
        }
    }

    #[test]
    fn id_number_errors_read_well() {
        assert_eq!(
            IdNumberError::CheckDigit {
                expected: 'X',
                found: '1'
            }
            .to_string(),
            "identity number check character is 1, expected X"
        );
        assert_eq!(
            IdNumberError::WrongLength { length: 17 }.to_string(),
            "identity number has 17 characters, expected 18"
        );
    }

    // ----- ICAO check digit

    #[test]
    fn icao_check_digits_of_the_specimens() {
        // TD3 specimen fields.
        assert_eq!(icao_check_digit("L898902C3"), Some(6));
        assert_eq!(icao_check_digit("740812"), Some(2));
        assert_eq!(icao_check_digit("120415"), Some(9));
        assert_eq!(icao_check_digit("ZE184226B<<<<<"), Some(1));
        assert_eq!(
            icao_check_digit("L898902C3674081221204159ZE184226B<<<<<1"),
            Some(0)
        );
        // TD1 (ID card) specimen, ICAO 9303 part 5:
        //   I<UTOD231458907<<<<<<<<<<<<<<<
        //   7408122F1204159UTO<<<<<<<<<<<6
        //   ERIKSSON<<ANNA<MARIA<<<<<<<<<<
        let td1_l1 = "I<UTOD231458907<<<<<<<<<<<<<<<";
        let td1_l2 = "7408122F1204159UTO<<<<<<<<<<<6";
        assert_eq!(icao_check_digit("D23145890"), Some(7));
        let td1_composite = [
            &td1_l1[5..30],
            &td1_l2[0..7],
            &td1_l2[8..15],
            &td1_l2[18..29],
        ]
        .concat();
        assert_eq!(icao_check_digit(&td1_composite), Some(6));
    }

    #[test]
    fn icao_check_digit_values_and_weights() {
        assert_eq!(icao_check_digit(""), Some(0));
        assert_eq!(icao_check_digit("<<<<<<<<<"), Some(0));
        assert_eq!(icao_check_digit("1"), Some(7)); // 1*7
        assert_eq!(icao_check_digit("01"), Some(3)); // 1*3
        assert_eq!(icao_check_digit("001"), Some(1)); // 1*1
        assert_eq!(icao_check_digit("0001"), Some(7)); // weights repeat
        assert_eq!(icao_check_digit("A"), Some(0)); // 10*7 = 70
        assert_eq!(icao_check_digit("B"), Some(7)); // 11*7 = 77
        assert_eq!(icao_check_digit("Z"), Some(5)); // 35*7 = 245
        assert_eq!(icao_check_digit("<A"), Some(0)); // 10*3 = 30
        assert_eq!(icao_check_digit("<<Z"), Some(5)); // 35*1
                                                      // A long field does not overflow.
        assert_eq!(
            icao_check_digit(&"Z".repeat(1_000_000)).map(|d| d < 10),
            Some(true)
        );
    }

    #[test]
    fn icao_check_digit_rejects_other_characters() {
        for field in ["l898902C3", "L898902C3 ", "12-34", "ÄB", "12\n"] {
            assert_eq!(icao_check_digit(field), None, "{field:?}");
        }
    }

    // ----- TD3

    #[test]
    fn the_icao_specimen_parses() {
        let td3 = parse_td3(TD3_L1, TD3_L2).unwrap();
        assert_eq!(
            td3,
            Td3 {
                document_code: "P".to_string(),
                issuing_state: "UTO".to_string(),
                surname: "ERIKSSON".to_string(),
                given_names: "ANNA MARIA".to_string(),
                document_number: "L898902C3".to_string(),
                nationality: "UTO".to_string(),
                birth_date: MrzBirthDate {
                    yy: Some(74),
                    month: Some(8),
                    day: Some(12)
                },
                sex: Some(Sex::Female),
                expiry_date: MrzDate {
                    yy: 12,
                    month: 4,
                    day: 15
                },
                optional_data: "ZE184226B".to_string(),
            }
        );
        assert_eq!(td3.birth_date.resolve(TODAY), Some((1974, 8, 12)));
        assert_eq!(td3.expiry_date.expiry(TODAY), (2012, 4, 15));
    }

    #[test]
    fn the_specimen_built_from_fields_matches() {
        assert_eq!(
            line2(
                "L898902C3",
                "UTO",
                "740812",
                'F',
                "120415",
                "ZE184226B",
                None
            ),
            TD3_L2
        );
    }

    #[test]
    fn a_flipped_document_number_digit_names_the_document_number() {
        let l2 = replace_at(TD3_L2, 1, '9'); // L998902C3
        assert_eq!(
            parse_td3(TD3_L1, &l2),
            Err(MrzError::DocumentNumberCheck {
                expected: '9',
                found: '6'
            })
        );
        let l2 = replace_at(TD3_L2, 9, '7'); // the check digit itself
        assert_eq!(
            parse_td3(TD3_L1, &l2),
            Err(MrzError::DocumentNumberCheck {
                expected: '6',
                found: '7'
            })
        );
    }

    #[test]
    fn a_flipped_birth_date_digit_names_the_birth_date() {
        let l2 = replace_at(TD3_L2, 18, '3'); // 740813
        assert_eq!(
            parse_td3(TD3_L1, &l2),
            Err(MrzError::BirthDateCheck {
                expected: '3',
                found: '2'
            })
        );
        let l2 = replace_at(TD3_L2, 19, '<');
        assert_eq!(
            parse_td3(TD3_L1, &l2),
            Err(MrzError::BirthDateCheck {
                expected: '2',
                found: '<'
            })
        );
    }

    #[test]
    fn a_flipped_expiry_digit_names_the_expiry_date() {
        let l2 = replace_at(TD3_L2, 26, '6'); // 120416
        assert_eq!(
            parse_td3(TD3_L1, &l2),
            Err(MrzError::ExpiryDateCheck {
                expected: '0',
                found: '9'
            })
        );
    }

    #[test]
    fn a_flipped_optional_data_digit_names_the_optional_data() {
        let l2 = replace_at(TD3_L2, 35, '7'); // ZE184227B
        assert_eq!(
            parse_td3(TD3_L1, &l2),
            Err(MrzError::OptionalDataCheck {
                expected: '4',
                found: '1'
            })
        );
        // Non-blank optional data may not use a filler as its check digit.
        let l2 = replace_at(TD3_L2, 42, '<');
        assert_eq!(
            parse_td3(TD3_L1, &l2),
            Err(MrzError::OptionalDataCheck {
                expected: '1',
                found: '<'
            })
        );
    }

    #[test]
    fn a_flipped_composite_digit_names_the_composite() {
        let l2 = replace_at(TD3_L2, 43, '1');
        assert_eq!(
            parse_td3(TD3_L1, &l2),
            Err(MrzError::CompositeCheck {
                expected: '0',
                found: '1'
            })
        );
        // The nationality (positions 11-13) is outside every check digit: a misread there is
        // only caught by the letter-code format check.
        let l2 = replace_at(TD3_L2, 12, 'A');
        assert_eq!(parse_td3(TD3_L1, &l2).unwrap().nationality, "UTA");
    }

    #[test]
    fn every_single_digit_flip_in_a_checked_field_is_caught() {
        // Positions 1-9 (document number), 14-19 (birth), 22-27 (expiry), 29-42 (optional data),
        // 0-based here: each flip to another digit must be reported as that field's error.
        let fields: [(std::ops::Range<usize>, &str); 4] = [
            (0..9, "document"),
            (13..19, "birth"),
            (21..27, "expiry"),
            (28..37, "optional"),
        ];
        for (range, name) in fields {
            for i in range {
                let original = TD3_L2.as_bytes()[i];
                if !original.is_ascii_digit() {
                    continue;
                }
                for d in b'0'..=b'9' {
                    if d == original {
                        continue;
                    }
                    let l2 = replace_at(TD3_L2, i, char::from(d));
                    let err = parse_td3(TD3_L1, &l2).unwrap_err();
                    let matched = match name {
                        "document" => matches!(err, MrzError::DocumentNumberCheck { .. }),
                        "birth" => matches!(err, MrzError::BirthDateCheck { .. }),
                        "expiry" => matches!(err, MrzError::ExpiryDateCheck { .. }),
                        _ => matches!(err, MrzError::OptionalDataCheck { .. }),
                    };
                    assert!(matched, "{l2}: {err:?}");
                }
            }
        }
    }

    #[test]
    fn blank_optional_data_may_have_a_filler_or_zero_check_digit() {
        for check in ['<', '0'] {
            let l2 = line2("L898902C3", "UTO", "740812", 'F', "120415", "", Some(check));
            let td3 = parse_td3(TD3_L1, &l2).unwrap();
            assert_eq!(td3.optional_data, "", "{l2}");
        }
        // '<' and '0' weigh the same in the composite, so both lines share the composite digit.
        let a = line2("L898902C3", "UTO", "740812", 'F', "120415", "", Some('<'));
        let b = line2("L898902C3", "UTO", "740812", 'F', "120415", "", Some('0'));
        assert_eq!(a.as_bytes()[43], b.as_bytes()[43]);
        // Anything else is wrong.
        let l2 = line2("L898902C3", "UTO", "740812", 'F', "120415", "", Some('3'));
        assert_eq!(
            parse_td3(TD3_L1, &l2),
            Err(MrzError::OptionalDataCheck {
                expected: '0',
                found: '3'
            })
        );
    }

    #[test]
    fn lines_must_be_44_characters_of_the_mrz_set() {
        assert_eq!(
            parse_td3(&TD3_L1[..43], TD3_L2),
            Err(MrzError::WrongLength {
                line: 1,
                length: 43
            })
        );
        assert_eq!(
            parse_td3(TD3_L1, &format!("{TD3_L2}<")),
            Err(MrzError::WrongLength {
                line: 2,
                length: 45
            })
        );
        assert_eq!(
            parse_td3(TD3_L1, &format!("{TD3_L2}\n")),
            Err(MrzError::WrongLength {
                line: 2,
                length: 45
            })
        );
        assert_eq!(
            parse_td3(&replace_at(TD3_L1, 5, 'e'), TD3_L2),
            Err(MrzError::BadCharacter {
                line: 1,
                position: 6,
                found: 'e'
            })
        );
        assert_eq!(
            parse_td3(TD3_L1, &replace_at(TD3_L2, 20, 'Ö')),
            Err(MrzError::BadCharacter {
                line: 2,
                position: 21,
                found: 'Ö'
            })
        );
        assert_eq!(
            parse_td3(TD3_L1, &replace_at(TD3_L2, 0, ' ')),
            Err(MrzError::BadCharacter {
                line: 2,
                position: 1,
                found: ' '
            })
        );
    }

    #[test]
    fn only_passport_codes_are_td3() {
        for (code, ok) in [
            ("P<", true),
            ("PD", true),
            ("PO", true),
            ("I<", false),
            ("V<", false),
            ("P1", false),
            ("<P", false),
        ] {
            let l1 = format!("{code}{}", &TD3_L1[2..]);
            let result = parse_td3(&l1, TD3_L2);
            if ok {
                assert_eq!(result.unwrap().document_code, code.trim_end_matches('<'));
            } else {
                assert_eq!(
                    result,
                    Err(MrzError::NotPassport {
                        found: code.to_string()
                    })
                );
            }
        }
    }

    #[test]
    fn country_codes_are_letters_then_fillers() {
        let l1 = format!("P<D<<{}", &TD3_L1[5..]);
        assert_eq!(parse_td3(&l1, TD3_L2).unwrap().issuing_state, "D");
        for state in ["U1O", "<<<", "<TO"] {
            let l1 = format!("P<{state}{}", &TD3_L1[5..]);
            assert_eq!(
                parse_td3(&l1, TD3_L2),
                Err(MrzError::BadIssuingState {
                    found: state.to_string()
                }),
                "{state}"
            );
        }
        let l2 = line2(
            "L898902C3",
            "D<<",
            "740812",
            'F',
            "120415",
            "ZE184226B",
            None,
        );
        assert_eq!(parse_td3(TD3_L1, &l2).unwrap().nationality, "D");
        let l2 = line2(
            "L898902C3",
            "U7O",
            "740812",
            'F',
            "120415",
            "ZE184226B",
            None,
        );
        assert_eq!(
            parse_td3(TD3_L1, &l2),
            Err(MrzError::BadNationality {
                found: "U7O".to_string()
            })
        );
    }

    #[test]
    fn names_split_on_double_filler() {
        let name_line = |name: &str| format!("P<UTO{name:<<39}");
        let parse = |name: &str| parse_td3(&name_line(name), TD3_L2);

        let td3 = parse("VAN<DER<BERG<<JAN<PIETER").unwrap();
        assert_eq!(td3.surname, "VAN DER BERG");
        assert_eq!(td3.given_names, "JAN PIETER");

        let td3 = parse("MADONNA").unwrap();
        assert_eq!(td3.surname, "MADONNA");
        assert_eq!(td3.given_names, "");

        // A name that fills the whole field.
        let long = "ABCDEFGHIJKLMNOPQRST<<ABCDEFGHIJKLMNOPQ";
        assert_eq!(long.len(), 39);
        let td3 = parse(long).unwrap();
        assert_eq!(td3.surname, "ABCDEFGHIJKLMNOPQRST");
        assert_eq!(td3.given_names, "ABCDEFGHIJKLMNOPQ");

        assert_eq!(parse(""), Err(MrzError::MissingName));
        assert_eq!(parse("<<ANNA"), Err(MrzError::MissingName));
        assert_eq!(
            parse("ER1KSSON<<ANNA"),
            Err(MrzError::BadName {
                found: format!("{:<<39}", "ER1KSSON<<ANNA")
            })
        );
    }

    #[test]
    fn document_number_fillers_are_trimmed_and_it_may_not_be_empty() {
        let l2 = line2("AB123", "UTO", "740812", 'F', "120415", "", None);
        assert_eq!(parse_td3(TD3_L1, &l2).unwrap().document_number, "AB123");
        let l2 = line2("", "UTO", "740812", 'F', "120415", "", None);
        assert_eq!(parse_td3(TD3_L1, &l2), Err(MrzError::MissingDocumentNumber));
    }

    #[test]
    fn sex_codes() {
        for (c, sex) in [
            ('M', Some(Sex::Male)),
            ('F', Some(Sex::Female)),
            ('<', None),
            ('X', None),
        ] {
            let l2 = line2("L898902C3", "UTO", "740812", c, "120415", "ZE184226B", None);
            assert_eq!(parse_td3(TD3_L1, &l2).unwrap().sex, sex, "{c}");
        }
        let l2 = line2(
            "L898902C3",
            "UTO",
            "740812",
            'Q',
            "120415",
            "ZE184226B",
            None,
        );
        assert_eq!(parse_td3(TD3_L1, &l2), Err(MrzError::BadSex { found: 'Q' }));
        // Sex is outside the composite check: the specimen with M is still internally consistent.
        assert_eq!(
            parse_td3(TD3_L1, &replace_at(TD3_L2, 20, 'M')).unwrap().sex,
            Some(Sex::Male)
        );
    }

    #[test]
    fn birth_dates_are_checked_after_their_check_digit() {
        let with_birth = |birth: &str| line2("L898902C3", "UTO", birth, 'F', "120415", "", None);
        for bad in [
            "741301", "740001", "740800", "740832", "740431", "750229", "7<0812", "74A812",
        ] {
            assert_eq!(
                parse_td3(TD3_L1, &with_birth(bad)),
                Err(MrzError::BadBirthDate {
                    found: bad.to_string()
                }),
                "{bad}"
            );
        }
        // Leap days: 2-digit years divisible by 4 (00 may be 2000).
        for good in ["760229", "000229", "991231"] {
            assert!(parse_td3(TD3_L1, &with_birth(good)).is_ok(), "{good}");
        }
    }

    #[test]
    fn unknown_birth_date_parts_are_fillers() {
        let with_birth = |birth: &str| line2("L898902C3", "UTO", birth, 'F', "120415", "", None);
        let td3 = parse_td3(TD3_L1, &with_birth("74<<<<")).unwrap();
        assert_eq!(
            td3.birth_date,
            MrzBirthDate {
                yy: Some(74),
                month: None,
                day: None
            }
        );
        assert_eq!(td3.birth_date.year(TODAY), Some(1974));
        assert_eq!(td3.birth_date.resolve(TODAY), None);

        let td3 = parse_td3(TD3_L1, &with_birth("7408<<")).unwrap();
        assert_eq!(td3.birth_date.month, Some(8));
        assert_eq!(td3.birth_date.day, None);

        let td3 = parse_td3(TD3_L1, &with_birth("<<<<<<")).unwrap();
        assert_eq!(td3.birth_date.year(TODAY), None);

        // Day 31 with unknown month is allowed; 32 is not.
        assert!(parse_td3(TD3_L1, &with_birth("74<<31")).is_ok());
        assert!(matches!(
            parse_td3(TD3_L1, &with_birth("74<<32")),
            Err(MrzError::BadBirthDate { .. })
        ));
    }

    #[test]
    fn expiry_dates_must_be_complete_real_dates() {
        let with_expiry = |expiry: &str| line2("L898902C3", "UTO", "740812", 'F', expiry, "", None);
        for bad in ["121301", "120431", "130229", "12<<15", "<<<<<<"] {
            assert_eq!(
                parse_td3(TD3_L1, &with_expiry(bad)),
                Err(MrzError::BadExpiryDate {
                    found: bad.to_string()
                }),
                "{bad}"
            );
        }
        let td3 = parse_td3(TD3_L1, &with_expiry("320229")).unwrap();
        assert_eq!(td3.expiry_date.expiry(TODAY), (2032, 2, 29));
    }

    #[test]
    fn birth_centuries_never_put_a_birth_in_the_future() {
        let birth = |yy, month, day| MrzBirthDate {
            yy: Some(yy),
            month: Some(month),
            day: Some(day),
        };
        assert_eq!(birth(74, 8, 12).resolve(TODAY), Some((1974, 8, 12)));
        assert_eq!(birth(0, 1, 1).resolve(TODAY), Some((2000, 1, 1)));
        assert_eq!(birth(26, 5, 1).resolve(TODAY), Some((2026, 5, 1))); // born today
        assert_eq!(birth(26, 5, 2).resolve(TODAY), Some((1926, 5, 2))); // tomorrow -> last century
        assert_eq!(birth(27, 1, 1).resolve(TODAY), Some((1927, 1, 1)));
        assert_eq!(birth(99, 12, 31).resolve(TODAY), Some((1999, 12, 31)));
        // Across a century boundary.
        assert_eq!(
            birth(99, 12, 31).resolve((2100, 1, 1)),
            Some((2099, 12, 31))
        );
        assert_eq!(birth(1, 1, 1).resolve((2100, 1, 1)), Some((2001, 1, 1)));
    }

    #[test]
    fn expiry_centuries_lie_within_fifty_years_of_today() {
        let expiry = |yy| {
            MrzDate {
                yy,
                month: 6,
                day: 30,
            }
            .expiry(TODAY)
            .0
        };
        assert_eq!(expiry(12), 2012);
        assert_eq!(expiry(36), 2036);
        assert_eq!(expiry(75), 2075);
        assert_eq!(expiry(76), 1976);
        assert_eq!(expiry(99), 1999);
        assert_eq!(
            MrzDate {
                yy: 5,
                month: 1,
                day: 1
            }
            .expiry((2098, 1, 1))
            .0,
            2105
        );
    }

    #[test]
    fn mrz_errors_read_well() {
        assert_eq!(
            MrzError::CompositeCheck {
                expected: '0',
                found: '1'
            }
            .to_string(),
            "MRZ composite check digit is 1, expected 0"
        );
        assert_eq!(
            MrzError::WrongLength {
                line: 2,
                length: 43
            }
            .to_string(),
            "MRZ line 2 has 43 characters, expected 44"
        );
    }
}
