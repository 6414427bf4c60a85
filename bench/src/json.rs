//! A minimal JSON object writer for the `--json` report (no serde dependency needed).

use std::fmt::Write;

/// Builds one JSON object, field by field.
#[derive(Default)]
pub struct Obj {
    out: String,
}

impl Obj {
    /// An empty object.
    pub fn new() -> Obj {
        Obj::default()
    }

    fn key(&mut self, k: &str) {
        self.out.push(if self.out.is_empty() { '{' } else { ',' });
        quote(&mut self.out, k);
        self.out.push(':');
    }

    /// A string field.
    pub fn str(mut self, k: &str, v: &str) -> Obj {
        self.key(k);
        quote(&mut self.out, v);
        self
    }

    /// An integer field.
    pub fn int(mut self, k: &str, v: u64) -> Obj {
        self.key(k);
        let _ = write!(self.out, "{v}");
        self
    }

    /// A float field (non-finite values become `null`).
    pub fn num(mut self, k: &str, v: f64) -> Obj {
        self.key(k);
        if v.is_finite() {
            let _ = write!(self.out, "{v:.3}");
        } else {
            self.out.push_str("null");
        }
        self
    }

    /// A boolean field.
    pub fn bool(mut self, k: &str, v: bool) -> Obj {
        self.key(k);
        self.out.push_str(if v { "true" } else { "false" });
        self
    }

    /// A nested object field.
    pub fn obj(mut self, k: &str, v: Obj) -> Obj {
        self.key(k);
        self.out.push_str(&v.finish());
        self
    }

    /// The object text.
    pub fn finish(mut self) -> String {
        if self.out.is_empty() {
            return "{}".to_string();
        }
        self.out.push('}');
        self.out
    }
}

/// Appends `s` as a JSON string literal.
pub fn quote(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_objects() {
        let j = Obj::new()
            .str("a", "x\"y\n\u{1}")
            .int("b", 3)
            .num("c", 1.5)
            .num("d", f64::NAN)
            .bool("e", true)
            .obj("f", Obj::new())
            .finish();
        assert_eq!(
            j,
            r#"{"a":"x\"y\n\u0001","b":3,"c":1.500,"d":null,"e":true,"f":{}}"#
        );
    }
}
