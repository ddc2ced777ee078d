//! The source language of a function, from its file name or its text.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    C,
    Cpp,
    Python,
}

impl Lang {
    pub fn detect(file_name: Option<&str>, code: &str) -> Lang {
        if let Some(ext) = file_name.and_then(|f| f.rsplit_once('.')).map(|(_, e)| e.to_ascii_lowercase()) {
            match ext.as_str() {
                "py" => return Lang::Python,
                "cc" | "cpp" | "cxx" | "hpp" | "hh" => return Lang::Cpp,
                "c" | "h" => return Lang::C,
                _ => {}
            }
        }
        let first = code.trim_start();
        if first.starts_with("def ") || first.starts_with("async def ") || first.starts_with('@') {
            Lang::Python
        } else {
            Lang::C
        }
    }

    /// Parses a language name as records and benchmark files spell it.
    pub fn from_code(code: &str) -> Option<Lang> {
        match code.to_ascii_lowercase().as_str() {
            "c" => Some(Lang::C),
            "cpp" | "c++" => Some(Lang::Cpp),
            "python" | "py" => Some(Lang::Python),
            _ => None,
        }
    }

    /// The short name stored in records.
    pub fn code(self) -> &'static str {
        match self {
            Lang::C => "c",
            Lang::Cpp => "cpp",
            Lang::Python => "python",
        }
    }

    pub fn display(self) -> &'static str {
        match self {
            Lang::C => "C",
            Lang::Cpp => "C++",
            Lang::Python => "Python",
        }
    }
}
