//! What a component declares about its options: shown by `vkgrad plugins`, and (ABI 1.4) the
//! domains `vkgrad verify` samples them from. The [`options!`](crate::options!) macro declares
//! an options struct once — fields, defaults, documentation, domains — and writes the struct,
//! its `Default`, its [`OptionSpec`]s and its [`OptionDomain`]s from that one declaration.

use crate::*;

/// One option of a component: its name, type (as shown to users), default and documentation.
#[derive(Debug, Clone, Serialize)]
pub struct OptionSpec {
    pub name: &'static str,
    #[serde(rename = "type")]
    pub ty: &'static str,
    pub default: Value,
    /// Shown with its whitespace collapsed (doc comments arrive with a leading space per line).
    #[serde(serialize_with = "one_line")]
    pub doc: &'static str,
}

fn one_line<S: serde::Serializer>(doc: &&'static str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&doc.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Where `vkgrad verify` draws an option's values from. A domain is the part of the valid
/// range worth testing (a temperature in [0.05, 2], not every positive float); every value in
/// it must be accepted, and a value the component refuses fails verification.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Domain {
    /// A float in [lo, hi]; log-uniform when `log` (both bounds > 0).
    Float { lo: f64, hi: f64, log: bool },
    /// An integer in [lo, hi].
    Int { lo: i64, hi: i64 },
    /// One of these values (strings, numbers, lists: any JSON).
    Choice(Vec<Value>),
    /// true or false.
    Bool,
    /// null or a value of the inner domain.
    Nullable(Box<Domain>),
}

impl Domain {
    /// A float uniform in [lo, hi].
    pub fn float(lo: f64, hi: f64) -> Domain {
        Domain::Float { lo, hi, log: false }
    }
    /// A float log-uniform in [lo, hi] (scales such as temperatures and margins).
    pub fn log_float(lo: f64, hi: f64) -> Domain {
        Domain::Float { lo, hi, log: true }
    }
    /// An integer in [lo, hi].
    pub fn int(lo: i64, hi: i64) -> Domain {
        Domain::Int { lo, hi }
    }
    /// One of `values`.
    pub fn choice<T: Serialize>(values: impl IntoIterator<Item = T>) -> Domain {
        Domain::Choice(
            values
                .into_iter()
                .map(|v| serde_json::to_value(v).unwrap_or(Value::Null))
                .collect(),
        )
    }
    /// null, or a value of this domain.
    pub fn or_null(self) -> Domain {
        Domain::Nullable(Box::new(self))
    }
}

/// An option's domain for `vkgrad verify` (ABI 1.4): sampled per generated case, unless the
/// option is `exempt` — an option that by design does not change the output (a path choice,
/// a seed, a running-statistics momentum) says why, and `verify --self-test` does not expect
/// ignoring it to be caught.
#[derive(Debug, Clone, Serialize)]
pub struct OptionDomain {
    pub name: &'static str,
    pub domain: Domain,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exempt: Option<&'static str>,
}

/// The schema a vtable carries: each option's spec with its domain (and exemption) beside it.
pub(crate) fn schema(specs: &[OptionSpec], domains: &[OptionDomain]) -> Value {
    Value::Array(
        specs
            .iter()
            .map(|s| {
                let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
                if let (Some(d), Value::Object(m)) =
                    (domains.iter().find(|d| d.name == s.name), &mut v)
                {
                    m.insert(
                        "domain".into(),
                        serde_json::to_value(&d.domain).unwrap_or(Value::Null),
                    );
                    if let Some(why) = d.exempt {
                        m.insert("exempt".into(), Value::String(why.into()));
                    }
                }
                v
            })
            .collect(),
    )
}

/// Declares a component's options once: each field with its type, default, the type as shown
/// to users, optionally its `domain` for `vkgrad verify` and an `exempt` reason, and its doc
/// comment as the documentation. Writes the struct (deserialised with defaults for missing
/// keys and an error for unknown ones), its `Default`, and `specs()` / `domains()` for the
/// component's `options()` / `option_domains()`.
///
/// ```
/// use vkgrad_plugin::{options, Domain};
/// options! {
///     pub struct MyOptions {
///         /// τ, the softmax temperature
///         pub temperature: f64 = 0.1, "float > 0", domain = Domain::log_float(0.05, 2.0);
///         /// "fast" or "exact": the same value either way
///         pub path: String = "fast".into(), "\"fast\" | \"exact\"",
///             domain = Domain::choice(["fast", "exact"]), exempt = "a path choice";
///     }
/// }
/// assert_eq!(MyOptions::default().temperature, 0.1);
/// assert_eq!(MyOptions::specs()[1].name, "path");
/// assert_eq!(MyOptions::domains().len(), 2);
/// ```
#[macro_export]
macro_rules! options {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[doc = $doc:literal])*
                $fvis:vis $field:ident : $ty:ty = $default:expr, $shown:literal
                    $(, domain = $domain:expr)? $(, exempt = $why:literal)?;
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive($crate::serde::Deserialize)]
        #[serde(crate = "vkgrad_plugin::serde", default, deny_unknown_fields)]
        $vis struct $name {
            $( $(#[doc = $doc])* $fvis $field: $ty, )*
        }

        impl ::std::default::Default for $name {
            fn default() -> Self {
                $name { $( $field: $default, )* }
            }
        }

        impl $name {
            /// Every option with its type, default and documentation.
            pub fn specs() -> ::std::vec::Vec<$crate::OptionSpec> {
                let defaults = <$name as ::std::default::Default>::default();
                ::std::vec![$(
                    $crate::OptionSpec {
                        name: ::std::stringify!($field),
                        ty: $shown,
                        default: $crate::serde_json::to_value(&defaults.$field)
                            .unwrap_or($crate::Value::Null),
                        doc: ::std::concat!($($doc, "\n",)* ""),
                    },
                )*]
            }

            /// The options `vkgrad verify` samples, with their domains.
            pub fn domains() -> ::std::vec::Vec<$crate::OptionDomain> {
                #[allow(unused_mut)]
                let mut out = ::std::vec::Vec::new();
                $({
                    #[allow(unused_mut, unused_assignments)]
                    let mut exempt: ::std::option::Option<&'static str> = None;
                    $( exempt = Some($why); )?
                    $(
                        out.push($crate::OptionDomain {
                            name: ::std::stringify!($field),
                            domain: $domain,
                            exempt,
                        });
                    )?
                })*
                out
            }
        }
    };
}
