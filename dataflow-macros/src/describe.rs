//! Step 2, describe: the struct and its parsed attributes become a [`ModelDesc`], checked as a
//! whole (one primary key, rules that fit their field's type, safe names). Code generation
//! reads only this description, never raw `syn` attributes.

use proc_macro2::Ident;
use quote::ToTokens;
use syn::{Data, DeriveInput, Fields, GenericArgument, PathArguments, Type};

use crate::attr::{self, Spanned};
use crate::ctxt::Ctxt;
use crate::symbol::SYSTEM_COLUMNS;

/// Default seconds a cached row lives.
const DEFAULT_CACHE_TTL: u64 = 300;

/// A model as the generated code needs it.
pub struct ModelDesc {
    pub ident: Ident,
    pub vis: syn::Visibility,
    pub doc: String,
    pub table: String,
    pub soft_delete: bool,
    pub multi_tenant: bool,
    pub cache_ttl: u64,
    pub fields: Vec<FieldDesc>,
}

/// The Rust type of a field, which decides its column type and decoding.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum RustType {
    I64,
    Narrow(&'static str, i64, i64),
    F64,
    F32,
    Bool,
    String,
    DateTime,
    Json,
}

impl RustType {
    /// The `dataflow_core::FieldType` variant name.
    pub fn field_type(self) -> &'static str {
        match self {
            RustType::I64 | RustType::Narrow(..) => "Integer",
            RustType::F64 | RustType::F32 => "Float",
            RustType::Bool => "Boolean",
            RustType::String => "Text",
            RustType::DateTime => "Timestamp",
            RustType::Json => "Json",
        }
    }

    fn is_numeric(self) -> bool {
        matches!(self, RustType::I64 | RustType::Narrow(..) | RustType::F64 | RustType::F32)
    }

    fn is_integer(self) -> bool {
        matches!(self, RustType::I64 | RustType::Narrow(..))
    }
}

/// A validation rule as written (and, for narrow integers, implied).
pub enum RuleDesc {
    Min(f64),
    Max(f64),
    Len(Option<usize>, Option<usize>),
    Pattern(String),
    OneOf(Vec<String>),
}

/// One field.
pub struct FieldDesc {
    pub ident: Ident,
    pub name: String,
    pub ty: Type,
    /// The type inside `Option<...>` (or `ty` itself).
    pub inner_ty: Type,
    pub rust: RustType,
    pub nullable: bool,
    pub primary_key: bool,
    pub indexed: bool,
    pub unique: bool,
    pub embed: bool,
    pub rules: Vec<RuleDesc>,
    pub relation: Option<RelationDesc>,
    pub doc: String,
    /// `#[doc]` and `#[serde]` attributes, copied onto the generated `New{Model}` struct.
    pub forwarded_attrs: Vec<syn::Attribute>,
}

/// A relation on a foreign-key field.
pub struct RelationDesc {
    pub target: syn::Path,
    pub name: String,
    /// The variant of `dataflow_core::OnDelete`: `Restrict`, `Cascade` or `SetNull`.
    pub on_delete: &'static str,
}

/// Describes `input`, recording every problem in `cx`. Returns `None` when the input is not a
/// struct with named fields (nothing sensible can be generated then).
pub fn describe(cx: &Ctxt, input: &DeriveInput) -> Option<ModelDesc> {
    let fields = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(named) => &named.named,
            _ => {
                cx.error_spanned_by(&input.ident, "#[derive(Model)] needs a struct with named fields");
                return None;
            }
        },
        _ => {
            cx.error_spanned_by(&input.ident, "#[derive(Model)] applies to structs only");
            return None;
        }
    };
    if !input.generics.params.is_empty() {
        cx.error_spanned_by(&input.generics, "#[derive(Model)] does not support generic structs");
    }
    check_serde_attrs(
        cx,
        &input.attrs,
        &[
            "rename_all",
            "rename",
            "tag",
            "untagged",
            "transparent",
            "remote",
            "from",
            "try_from",
            "into",
        ],
    );

    let container = attr::container(cx, &input.attrs);
    let table = match &container.table {
        Some(t) => {
            if !is_sql_name(&t.value) {
                cx.error_spanned_by(
                    &t.tokens,
                    "table names must be lowercase snake case: [a-z_][a-z0-9_]*, at most 63 bytes",
                );
            }
            t.value.clone()
        }
        None => format!("{}s", snake_case(&input.ident.to_string())),
    };

    let mut descs = Vec::new();
    for field in fields {
        let ident = field.ident.clone().expect("named field");
        let name = ident.to_string();
        let attrs = attr::field(cx, &field.attrs);
        check_serde_attrs(
            cx,
            &field.attrs,
            &[
                "rename",
                "skip",
                "skip_serializing",
                "skip_deserializing",
                "flatten",
                "alias",
                "with",
                "serialize_with",
                "deserialize_with",
                "getter",
            ],
        );
        if name.starts_with("r#") || !is_sql_name(&name) {
            cx.error_spanned_by(
                &ident,
                "field names become column names and must be lowercase snake case: [a-z_][a-z0-9_]*",
            );
        }
        if SYSTEM_COLUMNS.contains(&name.as_str()) {
            cx.error_spanned_by(
                &ident,
                format!(
                    "`{name}` is a column dataflow maintains itself ({}); rename the field",
                    SYSTEM_COLUMNS.join(", ")
                ),
            );
        }
        let (nullable, inner_ty) = match option_inner(&field.ty) {
            Some(inner) => (true, inner.clone()),
            None => (false, field.ty.clone()),
        };
        let Some(rust) = classify(&inner_ty) else {
            cx.error_spanned_by(
                &field.ty,
                "unsupported field type; supported: i64, i32, u32, i16, u16, i8, u8, f64, f32, bool, String, chrono::DateTime<Utc>, serde_json::Value, and Option of each",
            );
            continue;
        };
        descs.push(check_field(cx, field, ident, name, nullable, inner_ty, rust, attrs));
    }

    let pks: Vec<&FieldDesc> = descs.iter().filter(|f| f.primary_key).collect();
    match pks.len() {
        0 => cx.error_spanned_by(
            &input.ident,
            "a model needs one field marked #[dataflow(primary_key)] (an i64 the database generates)",
        ),
        1 => {}
        _ => {
            for pk in &pks[1..] {
                cx.error_spanned_by(&pk.ident, "only one field can be the primary key");
            }
        }
    }
    let mut relation_names: Vec<&str> = Vec::new();
    for f in &descs {
        if let Some(r) = &f.relation {
            if relation_names.contains(&r.name.as_str()) {
                cx.error_spanned_by(&f.ident, format!("relation name `{}` is used twice", r.name));
            }
            relation_names.push(&r.name);
        }
    }
    if container.multi_tenant.is_some() && descs.iter().any(|f| f.name == "tenant_id") {
        // Already reported as a system column; nothing more to say.
    }

    Some(ModelDesc {
        ident: input.ident.clone(),
        vis: input.vis.clone(),
        doc: doc_of(&input.attrs),
        table,
        soft_delete: container.soft_delete.is_some(),
        multi_tenant: container.multi_tenant.is_some(),
        cache_ttl: container.cache_ttl.as_ref().map(|t| t.value).unwrap_or(DEFAULT_CACHE_TTL),
        fields: descs,
    })
}

#[allow(clippy::too_many_arguments)]
fn check_field(
    cx: &Ctxt,
    field: &syn::Field,
    ident: Ident,
    name: String,
    nullable: bool,
    inner_ty: Type,
    rust: RustType,
    attrs: attr::FieldAttrs,
) -> FieldDesc {
    let not_for = |a: &Option<Spanned<()>>, ok: bool, msg: &str| {
        if let (Some(a), false) = (a, ok) {
            cx.error_spanned_by(&a.tokens, msg);
        }
    };
    if let Some(pk) = &attrs.primary_key
        && (rust != RustType::I64 || nullable)
    {
        cx.error_spanned_by(&pk.tokens, "the primary key must be an `i64` (generated by the database)");
    }
    let pk = attrs.primary_key.is_some();
    not_for(
        &attrs.unique,
        !pk && rust != RustType::Json,
        "`unique` applies to non-key scalar fields",
    );
    not_for(
        &attrs.indexed,
        !pk && rust != RustType::Json,
        "`indexed` applies to non-key scalar fields",
    );
    not_for(
        &attrs.embed,
        rust == RustType::String,
        "`embed` applies to String fields: their text is what gets embedded",
    );

    let mut rules = Vec::new();
    if let RustType::Narrow(_, lo, hi) = rust {
        rules.push(RuleDesc::Min(lo as f64));
        rules.push(RuleDesc::Max(hi as f64));
    }
    for (slot, is_min) in [(&attrs.min, true), (&attrs.max, false)] {
        if let Some(bound) = slot {
            if !rust.is_numeric() {
                cx.error_spanned_by(
                    &bound.tokens,
                    format!("`{}` applies to number fields", if is_min { "min" } else { "max" }),
                );
            }
            rules.push(if is_min {
                RuleDesc::Min(bound.value)
            } else {
                RuleDesc::Max(bound.value)
            });
        }
    }
    if let (Some(min), Some(max)) = (&attrs.min, &attrs.max)
        && min.value > max.value
    {
        cx.error_spanned_by(&max.tokens, format!("`max` ({}) is smaller than `min` ({})", max.value, min.value));
    }
    if let Some(len) = &attrs.len {
        if rust != RustType::String {
            cx.error_spanned_by(&len.tokens, "`len` applies to String fields");
        }
        if let (Some(a), Some(b)) = len.value
            && a > b
        {
            cx.error_spanned_by(&len.tokens, format!("`len` max ({b}) is smaller than min ({a})"));
        }
        rules.push(RuleDesc::Len(len.value.0, len.value.1));
    }
    if let Some(p) = &attrs.pattern {
        if rust != RustType::String {
            cx.error_spanned_by(&p.tokens, "`pattern` applies to String fields");
        }
        rules.push(RuleDesc::Pattern(p.value.clone()));
    }
    if let Some(o) = &attrs.one_of {
        if rust != RustType::String {
            cx.error_spanned_by(&o.tokens, "`one_of` applies to String fields");
        }
        rules.push(RuleDesc::OneOf(o.value.clone()));
    }
    let relation = attrs.relation.map(|r| {
        if !rust.is_integer() || pk {
            cx.error_spanned_by(
                &r.tokens,
                "a `relation` goes on a foreign-key field: an integer holding the target's primary key",
            );
        }
        let n = &r.value.name.value;
        let upper_snake = !n.is_empty()
            && n.len() <= 63
            && n.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            && n.starts_with(|c: char| c.is_ascii_uppercase());
        if !upper_snake {
            cx.error_spanned_by(&r.value.name.tokens, "relation names must be upper snake case, e.g. IN_CATEGORY");
        }
        let on_delete = match r.value.on_delete.as_ref().map(|o| (o.value.as_str(), &o.tokens)) {
            None | Some(("restrict", _)) => "Restrict",
            Some(("cascade", _)) => "Cascade",
            Some(("set_null", tokens)) => {
                if !nullable {
                    cx.error_spanned_by(tokens, "`on_delete = \"set_null\"` needs an `Option` field that can hold NULL");
                }
                "SetNull"
            }
            Some((_, tokens)) => {
                cx.error_spanned_by(
                    tokens,
                    "`on_delete` is one of \"restrict\" (the default), \"cascade\" or \"set_null\"",
                );
                "Restrict"
            }
        };
        RelationDesc {
            target: r.value.target,
            name: r.value.name.value,
            on_delete,
        }
    });
    let forwarded_attrs = field
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc") || a.path().is_ident("serde"))
        .cloned()
        .collect();
    FieldDesc {
        ident,
        name,
        ty: field.ty.clone(),
        inner_ty,
        rust,
        nullable,
        primary_key: pk,
        indexed: attrs.indexed.is_some(),
        unique: attrs.unique.is_some(),
        embed: attrs.embed.is_some(),
        rules,
        relation,
        doc: doc_of(&field.attrs),
        forwarded_attrs,
    }
}

/// Serde attributes that would make JSON names differ from column names are refused.
fn check_serde_attrs(cx: &Ctxt, attrs: &[syn::Attribute], refused: &[&str]) {
    for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        let _ = attr.parse_nested_meta(|meta| {
            if refused.iter().any(|r| meta.path.is_ident(r)) {
                cx.error_spanned_by(
                    &meta.path,
                    format!(
                        "#[serde({})] is not supported on a dataflow model: field names are column names and JSON names alike",
                        meta.path.to_token_stream()
                    ),
                );
            }
            // Skip any value or nested list this attribute carries.
            if meta.input.peek(syn::Token![=]) {
                let _: syn::Expr = meta.value()?.parse()?;
            } else if meta.input.peek(syn::token::Paren) {
                let _content;
                syn::parenthesized!(_content in meta.input);
            }
            Ok(())
        });
    }
}

fn option_inner(ty: &Type) -> Option<&Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "Option" {
        return None;
    }
    match &last.arguments {
        PathArguments::AngleBracketed(args) if args.args.len() == 1 => match args.args.first()? {
            GenericArgument::Type(inner) => Some(inner),
            _ => None,
        },
        _ => None,
    }
}

fn classify(ty: &Type) -> Option<RustType> {
    let Type::Path(p) = ty else { return None };
    if p.qself.is_some() {
        return None;
    }
    let segments: Vec<String> = p.path.segments.iter().map(|s| s.ident.to_string()).collect();
    let last = segments.last()?.as_str();
    Some(match last {
        "i64" => RustType::I64,
        "i32" => RustType::Narrow("i32", i32::MIN as i64, i32::MAX as i64),
        "u32" => RustType::Narrow("u32", 0, u32::MAX as i64),
        "i16" => RustType::Narrow("i16", i16::MIN as i64, i16::MAX as i64),
        "u16" => RustType::Narrow("u16", 0, u16::MAX as i64),
        "i8" => RustType::Narrow("i8", i8::MIN as i64, i8::MAX as i64),
        "u8" => RustType::Narrow("u8", 0, u8::MAX as i64),
        "f64" => RustType::F64,
        "f32" => RustType::F32,
        "bool" => RustType::Bool,
        "String" => RustType::String,
        "DateTime" => {
            let last_seg = p.path.segments.last()?;
            match &last_seg.arguments {
                PathArguments::AngleBracketed(args) if args.args.len() == 1 && args.args.to_token_stream().to_string().ends_with("Utc") => {
                    RustType::DateTime
                }
                _ => return None,
            }
        }
        "Value" if segments.len() >= 2 && segments[segments.len() - 2] == "serde_json" => RustType::Json,
        _ => return None,
    })
}

fn is_sql_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// `UnspscCode` → `unspsc_code`.
pub fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The text of `///` comments, lines joined with newlines.
fn doc_of(attrs: &[syn::Attribute]) -> String {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => Some(s.value().trim().to_owned()),
                _ => None,
            },
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn describe_ok(input: DeriveInput) -> ModelDesc {
        let cx = Ctxt::new();
        let desc = describe(&cx, &input);
        cx.check()
            .map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>())
            .expect("no errors");
        desc.expect("a description")
    }

    fn errors_of(input: DeriveInput) -> Vec<String> {
        let cx = Ctxt::new();
        let _ = describe(&cx, &input);
        cx.check().err().unwrap_or_default().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn describes_types_rules_and_defaults() {
        let desc = describe_ok(syn::parse_quote! {
            /// A product.
            struct ProductLine {
                #[dataflow(primary_key)] id: i64,
                #[dataflow(len(min = 1, max = 20), unique)] sku: String,
                #[dataflow(min = -1.5, max = 10)] score: Option<f64>,
                count: i32,
                #[dataflow(relation(target = Category, name = "IN_CATEGORY"))] category_id: i64,
                at: chrono::DateTime<chrono::Utc>,
                extra: serde_json::Value,
            }
        });
        assert_eq!(desc.table, "product_lines");
        assert_eq!(desc.cache_ttl, DEFAULT_CACHE_TTL);
        assert_eq!(desc.doc, "A product.");
        let score = &desc.fields[2];
        assert!(score.nullable);
        assert_eq!(score.rust.field_type(), "Float");
        assert!(matches!(score.rules[..], [RuleDesc::Min(a), RuleDesc::Max(b)] if a == -1.5 && b == 10.0));
        assert!(matches!(desc.fields[3].rules[..], [RuleDesc::Min(_), RuleDesc::Max(b)] if b == i32::MAX as f64));
        assert_eq!(desc.fields[4].relation.as_ref().map(|r| r.name.as_str()), Some("IN_CATEGORY"));
        assert_eq!(desc.fields[5].rust.field_type(), "Timestamp");
        assert_eq!(desc.fields[6].rust.field_type(), "Json");
    }

    #[test]
    fn reports_every_mistake_at_once() {
        let errors = errors_of(syn::parse_quote! {
            struct Bad {
                #[dataflow(primary_key)] id: String,
                #[dataflow(min = 1)] name: String,
                #[dataflow(len(max = 3))] price: f64,
                version: i64,
                #[dataflow(bogus)] other: bool,
            }
        });
        assert_eq!(errors.len(), 5, "{errors:#?}");
        assert!(errors[0].contains("primary key must be an `i64`"));
        assert!(errors[1].contains("`min` applies to number fields"));
        assert!(errors[2].contains("`len` applies to String fields"));
        assert!(errors[3].contains("maintains itself"));
        assert!(errors[4].contains("unknown dataflow field attribute `bogus`"));
    }

    #[test]
    fn snake_case_splits_words() {
        assert_eq!(snake_case("UnspscCode"), "unspsc_code");
        assert_eq!(snake_case("Product"), "product");
    }
}
