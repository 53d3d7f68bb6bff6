//! Passwords from a CSPRNG, shared by the operator (user Secrets) and `tusk local`.

use rand::Rng;

/// Length of generated passwords.
pub const PASSWORD_LENGTH: usize = 24;

/// Which characters a password may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alphabet {
    /// `A-Z a-z 0-9`.
    AlphaNumeric,
    /// Every printable ASCII character except those that need quoting in a URI or a shell
    /// (`'`, `"`, `\`, backtick) and space.
    Ascii,
}

/// A password of [`PASSWORD_LENGTH`] characters drawn uniformly from `alphabet`.
pub fn generate_password(alphabet: Alphabet, rng: &mut impl rand::CryptoRng) -> String {
    const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let ascii: Vec<u8> = (b'!'..=b'~')
        .filter(|c| !matches!(c, b'\'' | b'"' | b'\\' | b'`'))
        .collect();
    let chars: &[u8] = match alphabet {
        Alphabet::AlphaNumeric => ALPHANUMERIC,
        Alphabet::Ascii => &ascii,
    };
    (0..PASSWORD_LENGTH)
        .map(|_| chars[rng.random_range(0..chars.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphabets_are_respected() {
        let a = generate_password(Alphabet::AlphaNumeric, &mut rand::rng());
        assert_eq!(a.len(), PASSWORD_LENGTH);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        let b = generate_password(Alphabet::Ascii, &mut rand::rng());
        assert!(b
            .bytes()
            .all(|c| c.is_ascii_graphic() && !b"'\"\\`".contains(&c)));
        assert_ne!(b, generate_password(Alphabet::Ascii, &mut rand::rng()));
    }
}
