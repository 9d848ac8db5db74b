//! Enums spelled as keywords on the command line and in files: one macro gives
//! each its `as_str`, `Display` and `FromStr` (whose error lists the keywords).

/// `keyword_enum!(Type { Variant => "word", ... })`.
macro_rules! keyword_enum {
    ($ty:ident { $($variant:ident => $word:literal),+ $(,)? }) => {
        impl $ty {
            pub const WORDS: &'static [&'static str] = &[$($word),+];
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $word),+ }
            }
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl std::str::FromStr for $ty {
            type Err = $crate::error::Error;
            fn from_str(s: &str) -> $crate::error::Result<Self> {
                match s {
                    $($word => Ok($ty::$variant),)+
                    other => Err($crate::error::Error::config(format!(
                        "'{other}' is not one of: {}", Self::WORDS.join(", ")
                    ))),
                }
            }
        }
    };
}
