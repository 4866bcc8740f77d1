//! Who a user is: email, role, phone, and what makes a password acceptable.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A normalised email address: trimmed, domain lowercased, at most 254 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let trimmed = raw.trim();
        let (local, domain) = trimmed
            .rsplit_once('@')
            .ok_or_else(|| "must contain @".to_owned())?;
        let domain = domain.to_ascii_lowercase();
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.contains('@')
            && local
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"\"(),:;<>[\\]".contains(&b));
        let domain_ok = domain.len() >= 3
            && domain.len() <= 253
            && domain.contains('.')
            && !domain.starts_with(['.', '-'])
            && !domain.ends_with(['.', '-'])
            && !domain.contains("..")
            && domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !local_ok || !domain_ok || trimmed.len() > 254 {
            return Err("is not a valid email address".to_owned());
        }
        Ok(Email(format!("{local}@{domain}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `a***@example.com`, for logs.
    pub fn masked(&self) -> String {
        match self.0.split_once('@') {
            Some((local, domain)) => {
                format!("{}***@{domain}", local.chars().next().unwrap_or('*'))
            }
            None => "***".to_owned(),
        }
    }
}

impl TryFrom<String> for Email {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Email::parse(&s)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> String {
        e.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
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
    pub fn code(self) -> &'static str {
        match self {
            PasswordRule::TooShort => "password_too_short",
            PasswordRule::TooLong => "password_too_long",
            PasswordRule::Common => "password_too_common",
            PasswordRule::ContainsEmail => "password_contains_email",
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
    fn emails_are_trimmed_and_their_domain_lowercased() {
        assert_eq!(email().as_str(), "Jane.Doe@example.com");
        assert_eq!(Email::parse("  a@b.io ").unwrap().as_str(), "a@b.io");
        for bad in [
            "", "a", "a@", "@b.io", "a@b", "a@@b.io", "a b@c.io", "a@-b.io", "a@b..io",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(email().masked(), "J***@example.com");
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
