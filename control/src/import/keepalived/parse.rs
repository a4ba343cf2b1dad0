//! A keepalived.conf reader: tokens, then a tree of statements with their line numbers.
//!
//! keepalived's syntax is line-oriented: a statement is a keyword and its arguments on one
//! line; a `{` (at the end of the line, or alone on the next line) opens a block of
//! statements that a `}` closes. `#` or `!` at the start of a word starts a comment that
//! runs to the end of the line. Double quotes group words (`misc_path "/bin/check -x"`).
//! Bare value lists (`virtual_ipaddress { ... }`, group members) come out as statements whose
//! keyword is the first value.
//!
//! Contract: [`parse`] never panics; it fails only on unbalanced braces, and names the line.

use std::fmt;

/// One statement: `key args... [{ block }]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The keyword (first word).
    pub key: String,
    /// The remaining words, quotes removed.
    pub args: Vec<String>,
    /// 1-based line of the keyword.
    pub line: usize,
    /// The statements inside `{ }`, when the statement has a block.
    pub block: Option<Vec<Node>>,
}

impl Node {
    /// The statements of the block, or none.
    pub fn children(&self) -> &[Node] {
        self.block.as_deref().unwrap_or(&[])
    }

    /// The first argument, if any.
    pub fn arg(&self, i: usize) -> Option<&str> {
        self.args.get(i).map(String::as_str)
    }
}

/// Why a file could not be read as keepalived.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.line, self.message)
    }
}

impl std::error::Error for SyntaxError {}

#[derive(Debug, PartialEq, Eq)]
enum Tok {
    Word(String),
    Open,
    Close,
}

/// Splits one line into words and braces, dropping its comment.
fn tokenize(line: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' | '!' => break,
            '{' => {
                chars.next();
                out.push(Tok::Open);
            }
            '}' => {
                chars.next();
                out.push(Tok::Close);
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || c == '{' || c == '}' {
                        break;
                    }
                    chars.next();
                    if c == '"' {
                        // A quoted run, up to the closing quote or the end of the line.
                        for q in chars.by_ref() {
                            if q == '"' {
                                break;
                            }
                            word.push(q);
                        }
                    } else {
                        word.push(c);
                    }
                }
                out.push(Tok::Word(word));
            }
        }
    }
    out
}

/// Reads keepalived.conf text into its top-level statements.
///
/// # Errors
/// A `}` without its `{`, a `{` with no statement before it, or a block still open at the
/// end of the file.
pub fn parse(src: &str) -> Result<Vec<Node>, SyntaxError> {
    // stack[0] is the top level; each open block pushes (its statement, its children).
    let mut stack: Vec<(Option<Node>, Vec<Node>)> = vec![(None, Vec::new())];
    for (i, line) in src.lines().enumerate() {
        let lineno = i + 1;
        let mut words: Vec<String> = Vec::new();
        let flush = |words: &mut Vec<String>, level: &mut Vec<Node>| {
            if !words.is_empty() {
                let mut it = std::mem::take(words).into_iter();
                let key = it.next().unwrap_or_default();
                level.push(Node {
                    key,
                    args: it.collect(),
                    line: lineno,
                    block: None,
                });
            }
        };
        for tok in tokenize(line) {
            match tok {
                Tok::Word(w) => words.push(w),
                Tok::Open => {
                    let level = &mut stack.last_mut().expect("never empty").1;
                    flush(&mut words, level);
                    // `{` belongs to the statement just before it (same or previous line).
                    let owner = match level.pop() {
                        Some(n) if n.block.is_none() => n,
                        other => {
                            return Err(SyntaxError {
                                line: lineno,
                                message: format!(
                                    "'{{' without a statement before it{}",
                                    other.map_or(String::new(), |n| format!(
                                        " (after the block of '{}')",
                                        n.key
                                    ))
                                ),
                            });
                        }
                    };
                    stack.push((Some(owner), Vec::new()));
                }
                Tok::Close => {
                    flush(&mut words, &mut stack.last_mut().expect("never empty").1);
                    if stack.len() == 1 {
                        return Err(SyntaxError {
                            line: lineno,
                            message: "'}' without a matching '{'".into(),
                        });
                    }
                    let (owner, children) = stack.pop().expect("checked above");
                    let mut owner = owner.expect("only the top level has no owner");
                    owner.block = Some(children);
                    stack.last_mut().expect("never empty").1.push(owner);
                }
            }
        }
        flush(&mut words, &mut stack.last_mut().expect("never empty").1);
    }
    if stack.len() > 1 {
        let (owner, _) = stack.pop().expect("checked");
        let owner = owner.expect("not the top level");
        return Err(SyntaxError {
            line: owner.line,
            message: format!("block of '{}' is never closed", owner.key),
        });
    }
    Ok(stack.pop().expect("the top level").1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_blocks_comments_and_quotes() {
        let src = "! Configuration File for keepalived\n\
                   virtual_server 198.18.0.10 514 {   # the VIP\n\
                   \x20   lb_algo rr\n\
                   \x20   real_server 198.18.1.1 514\n\
                   \x20   {\n\
                   \x20       MISC_CHECK { misc_path \"/usr/bin/check -x\" }\n\
                   \x20   }\n\
                   }\n";
        let nodes = parse(src).unwrap();
        assert_eq!(nodes.len(), 1);
        let vs = &nodes[0];
        assert_eq!((vs.key.as_str(), vs.line), ("virtual_server", 2));
        assert_eq!(vs.args, ["198.18.0.10", "514"]);
        let rs = &vs.children()[1];
        assert_eq!((rs.key.as_str(), rs.line), ("real_server", 4));
        let misc = &rs.children()[0];
        assert_eq!(misc.key, "MISC_CHECK");
        assert_eq!(misc.children()[0].args, ["/usr/bin/check -x"]);
        assert_eq!(misc.children()[0].line, 6);
    }

    #[test]
    fn unbalanced_braces_name_the_line() {
        assert_eq!(parse("a {\n b 1\n").unwrap_err().line, 1);
        assert_eq!(parse("a 1\n}\n").unwrap_err().line, 2);
        assert_eq!(parse("{\n}\n").unwrap_err().line, 1);
    }

    #[test]
    fn comment_only_at_word_start() {
        assert_eq!(
            tokenize("path /a#b ! rest"),
            [Tok::Word("path".into()), Tok::Word("/a#b".into())]
        );
    }
}
