//! Who a user is: email, role, phone, and what makes a password acceptable.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error_code::ErrorCode;

/// An email address as the user typed it (trimmed), with its canonical form.
///
/// Two addresses name the same mailbox when their canonical forms are equal: the local part
/// Unicode-normalised (NFKC) and case-folded, the domain converted to ASCII with IDNA (UTS 46,
/// which lowercases and punycodes it). Uniqueness and every lookup use the canonical form;
/// the typed form is what the user sees and what mail is sent to, so equality and hashing
/// follow the canonical form only.
///
/// Case-folding the local part goes further than RFC 5321 requires (a server may treat
/// `Jane` and `jane` as different mailboxes), but no real provider does, and one person
/// holding several accounts through case variants is the failure that matters here.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email {
    display: String,
    canonical: String,
}

/// Longest address accepted, in bytes (RFC 5321 path limit less the angle brackets).
const MAX_EMAIL_BYTES: usize = 254;
/// Longest local part accepted, in bytes.
const MAX_LOCAL_BYTES: usize = 64;

impl Email {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let invalid = || "is not a valid email address".to_owned();
        let trimmed = raw.trim();
        let (local, domain) = trimmed
            .rsplit_once('@')
            .ok_or_else(|| "must contain @".to_owned())?;
        if trimmed.len() > MAX_EMAIL_BYTES || !is_local_part(local) {
            return Err(invalid());
        }
        let ascii_domain = canonical_domain(domain).ok_or_else(invalid)?;
        let folded = canonical_local(local);
        // Normalisation can turn harmless characters into special ones (a fullwidth `＠` into
        // `@`), so the canonical form must pass the same rules as the typed one.
        if !is_local_part(&folded) {
            return Err(invalid());
        }
        let canonical = format!("{folded}@{ascii_domain}");
        if canonical.len() > MAX_EMAIL_BYTES {
            return Err(invalid());
        }
        Ok(Email {
            display: trimmed.to_owned(),
            canonical,
        })
    }

    /// The address as the user typed it: shown to them and used to send them mail.
    pub fn as_str(&self) -> &str {
        &self.display
    }

    /// The mailbox's canonical form, the key of uniqueness and lookups. Not for sending mail:
    /// the folded local part need not be deliverable.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// `a***@example.com`, for logs.
    pub fn masked(&self) -> String {
        match self.canonical.rsplit_once('@') {
            Some((local, domain)) => {
                format!("{}***@{domain}", local.chars().next().unwrap_or('*'))
            }
            None => "***".to_owned(),
        }
    }
}

impl PartialEq for Email {
    fn eq(&self, other: &Self) -> bool {
        self.canonical == other.canonical
    }
}

impl Eq for Email {}

impl std::hash::Hash for Email {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.canonical.hash(state);
    }
}

/// Whether `local` may be the part of an address before the `@`: a plain (unquoted) local part
/// of printable characters without RFC 5322 specials, UTF-8 allowed (RFC 6531).
fn is_local_part(local: &str) -> bool {
    !local.is_empty()
        && local.len() <= MAX_LOCAL_BYTES
        && local.chars().all(|c| {
            if c.is_ascii() {
                c.is_ascii_graphic() && !"@\"(),:;<>[\\]".contains(c)
            } else {
                !c.is_control() && !c.is_whitespace()
            }
        })
}

/// NFKC, full case folding, NFKC again (folding can leave a string unnormalised): the
/// `NFKC_Casefold` idea, built from the two standard operations.
fn canonical_local(local: &str) -> String {
    use unicode_normalization::UnicodeNormalization as _;
    let normalised: String = local.nfkc().collect();
    let folded = icu_casemap::CaseMapper::new().fold_string(&normalised);
    folded.nfkc().collect()
}

/// The domain in ASCII, lowercased, with at least two labels; `None` when it is not a usable
/// mail domain. A Unicode domain goes through IDNA (UTS 46 mapping, STD3 characters) to
/// punycode. An ASCII one is only lowercased, which is what IDNA would do to any valid ASCII
/// name, and keeps every address earlier versions accepted (and stored) readable.
fn canonical_domain(domain: &str) -> Option<String> {
    use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};
    use unicode_normalization::UnicodeNormalization as _;
    let ascii = if domain.is_ascii() {
        domain.to_ascii_lowercase()
    } else {
        let normalised: String = domain.nfkc().collect();
        Uts46::new()
            .to_ascii(
                normalised.as_bytes(),
                AsciiDenyList::STD3,
                Hyphens::Allow,
                DnsLength::Ignore,
            )
            .ok()?
            .into_owned()
    };
    let ok = (3..=253).contains(&ascii.len())
        && ascii.contains('.')
        && !ascii.starts_with(['.', '-'])
        && !ascii.ends_with(['.', '-'])
        && !ascii.contains("..")
        && ascii
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    ok.then_some(ascii)
}

impl TryFrom<String> for Email {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Email::parse(&s)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> String {
        e.display
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

/// A phone number in E.164 form: `+` then 8 to 15 digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Phone(String);

impl Phone {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let compact: String = raw
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
            .collect();
        let digits = compact
            .strip_prefix('+')
            .ok_or_else(|| "must start with + and the country code".to_owned())?;
        if (8..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
        {
            Ok(Phone(compact))
        } else {
            Err("must be an E.164 number: + then 8 to 15 digits".to_owned())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Phone {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Phone::parse(&s)
    }
}

impl From<Phone> for String {
    fn from(p: Phone) -> String {
        p.0
    }
}

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Customer,
    Vendor,
    Courier,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Vendor => "vendor",
            Role::Courier => "courier",
            Role::Admin => "admin",
        }
    }
}

/// The roles anyone may register for; admins are made from the command line only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SelfServiceRole {
    Customer,
    Vendor,
    Courier,
}

impl From<SelfServiceRole> for Role {
    fn from(r: SelfServiceRole) -> Role {
        match r {
            SelfServiceRole::Customer => Role::Customer,
            SelfServiceRole::Vendor => Role::Vendor,
            SelfServiceRole::Courier => Role::Courier,
        }
    }
}

pub const MIN_PASSWORD_CHARS: usize = 10;
pub const MAX_PASSWORD_CHARS: usize = 128;

/// Which password rule a candidate broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordRule {
    #[error("must be at least {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    #[error("must be at most {MAX_PASSWORD_CHARS} characters")]
    TooLong,
    #[error("is too common; choose a less guessable password")]
    Common,
    #[error("must not contain the email address")]
    ContainsEmail,
}

impl PasswordRule {
    pub fn code(self) -> ErrorCode {
        match self {
            PasswordRule::TooShort => ErrorCode::PasswordTooShort,
            PasswordRule::TooLong => ErrorCode::PasswordTooLong,
            PasswordRule::Common => ErrorCode::PasswordTooCommon,
            PasswordRule::ContainsEmail => ErrorCode::PasswordContainsEmail,
        }
    }
}

/// Checks a new password against the policy: 10–128 characters, not a common password (or a
/// trivial pattern such as one repeated character or a keyboard run), not containing the
/// email address or its local part.
pub fn check_password(password: &str, email: &Email) -> Result<(), PasswordRule> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(PasswordRule::TooShort);
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(PasswordRule::TooLong);
    }
    let lower = password.to_lowercase();
    let email_lower = email.as_str().to_lowercase();
    let local = email_lower.split('@').next().unwrap_or_default();
    if lower.contains(&email_lower) || (local.len() >= 4 && lower.contains(local)) {
        return Err(PasswordRule::ContainsEmail);
    }
    if is_common(&lower) {
        return Err(PasswordRule::Common);
    }
    Ok(())
}

/// The common-password list shipped with hexmarket, one lowercase entry per line.
const COMMON_PASSWORDS: &str = include_str!("common_passwords.txt");

fn is_common(lower: &str) -> bool {
    let mut distinct: Vec<char> = lower.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() <= 2 {
        return true;
    }
    // Runs along the alphabet, the digits or a keyboard row.
    const RUNS: [&str; 5] = [
        "abcdefghijklmnopqrstuvwxyz",
        "01234567890123456789",
        "qwertyuiopasdfghjklzxcvbnm",
        "9876543210987654321",
        "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik9ol0p",
    ];
    if RUNS.iter().any(|run| run.contains(lower)) {
        return true;
    }
    COMMON_PASSWORDS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .any(|common| common == lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email() -> Email {
        Email::parse("Jane.Doe@Example.COM").unwrap()
    }

    #[test]
    fn emails_are_trimmed_and_keep_the_form_typed() {
        assert_eq!(email().as_str(), "Jane.Doe@Example.COM");
        assert_eq!(email().canonical(), "jane.doe@example.com");
        assert_eq!(Email::parse("  a@b.io ").unwrap().as_str(), "a@b.io");
        for bad in [
            "",
            "a",
            "a@",
            "@b.io",
            "a@b",
            "a@@b.io",
            "a b@c.io",
            "a@-b.io",
            "a@b..io",
            "a@b_c.io",
            "a\u{0}b@c.io",
            "a\u{2028}@c.io",
            "a@b.io.",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(email().masked(), "j***@example.com");
    }

    #[test]
    fn case_variants_of_one_mailbox_are_one_address() {
        let forms = [
            "Case-X@Example.com",
            "case-X@example.com",
            "CASE-X@EXAMPLE.COM",
        ];
        let parsed: Vec<Email> = forms.iter().map(|f| Email::parse(f).unwrap()).collect();
        for (email, form) in parsed.iter().zip(forms) {
            assert_eq!(email.canonical(), "case-x@example.com");
            assert_eq!(email.as_str(), form);
            assert_eq!(email, &parsed[0]);
        }
    }

    #[test]
    fn canonical_forms_are_normalised_folded_and_punycoded() {
        let canonical = |raw: &str| Email::parse(raw).unwrap().canonical().to_owned();
        // Full case folding, not lowercasing: ß folds to ss, final sigma to sigma.
        assert_eq!(
            canonical("Straße@example.de"),
            canonical("STRASSE@example.de")
        );
        assert_eq!(canonical("ΟΔΟΣ@example.gr"), canonical("οδος@example.gr"));
        // Compatibility forms: fullwidth letters, a precomposed and a combining é.
        assert_eq!(canonical("ｊａｎｅ@example.com"), "jane@example.com");
        assert_eq!(
            canonical("Jose\u{301}@example.com"),
            canonical("JOSÉ@example.com")
        );
        // The domain in punycode, whatever its case or form.
        let idn = Email::parse("jane@Bücher.Example").unwrap();
        assert_eq!(idn.canonical(), "jane@xn--bcher-kva.example");
        assert_eq!(idn.as_str(), "jane@Bücher.Example");
        assert_eq!(canonical("jane@xn--bcher-kva.example"), idn.canonical());
        // A fullwidth @ in the local part would become a second @.
        assert!(Email::parse("a＠b@example.com").is_err());
    }

    #[test]
    fn emails_round_trip_through_serde_in_the_typed_form() {
        let json = serde_json::to_string(&email()).unwrap();
        assert_eq!(json, "\"Jane.Doe@Example.COM\"");
        let back: Email = serde_json::from_str(&json).unwrap();
        assert_eq!(back.as_str(), "Jane.Doe@Example.COM");
        assert_eq!(back, email());
    }

    #[test]
    fn phones_must_be_e164() {
        assert_eq!(
            Phone::parse("+44 7700 900123").unwrap().as_str(),
            "+447700900123"
        );
        for bad in [
            "07700900123",
            "+0123456789",
            "+12",
            "+1234567890123456",
            "+44abc",
        ] {
            assert!(Phone::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_password_policy_names_the_broken_rule() {
        let e = email();
        assert_eq!(check_password("short", &e), Err(PasswordRule::TooShort));
        assert_eq!(
            check_password(&"x".repeat(129), &e),
            Err(PasswordRule::TooLong)
        );
        assert_eq!(check_password("password123", &e), Err(PasswordRule::Common));
        assert_eq!(
            check_password("aaaaaaaaaaaa", &e),
            Err(PasswordRule::Common)
        );
        assert_eq!(check_password("1234567890", &e), Err(PasswordRule::Common));
        assert_eq!(check_password("qwertyuiop", &e), Err(PasswordRule::Common));
        assert_eq!(
            check_password("my jane.doe secret!", &e),
            Err(PasswordRule::ContainsEmail)
        );
        assert_eq!(check_password("correct horse battery", &e), Ok(()));
        assert_eq!(check_password(&"Zq9!".repeat(16), &e), Ok(()));
    }
}
