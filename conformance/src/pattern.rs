//! `--case PATTERN`: which cases to run. A pattern with `*` or `?` is a glob over the whole
//! `family/name` (`*` any run of characters, `?` one character); any other pattern selects every
//! case whose `family/name` contains it.

/// Whether `name` is selected by `pattern`.
pub fn matches(pattern: &str, name: &str) -> bool {
    if pattern.contains(['*', '?']) {
        let pattern: Vec<char> = pattern.chars().collect();
        let name: Vec<char> = name.chars().collect();
        glob(&pattern, &name)
    } else {
        name.contains(pattern)
    }
}

/// Iterative glob with single-star backtracking: linear in practice, never recursive.
fn glob(pattern: &[char], name: &[char]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == '?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_pattern_is_a_substring_match() {
        assert!(matches("exec", "exec/echo"));
        assert!(matches("echo", "exec/echo"));
        assert!(!matches("fs/", "exec/echo"));
    }

    #[test]
    fn glob_matches_the_whole_name() {
        assert!(matches("exec/*", "exec/echo"));
        assert!(matches("*/echo", "exec/echo"));
        assert!(matches("e?ec/e*o", "exec/echo"));
        assert!(!matches("exec/e", "fs/stat"));
        assert!(!matches("exec/*x", "exec/echo"));
        assert!(!matches("xec/*", "exec/echo"));
        assert!(matches("*", "handshake/ready"));
        assert!(matches("**a**", "a"));
    }
}
