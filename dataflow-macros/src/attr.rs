//! Step 1, parse: `#[dataflow(...)]` attributes into plain values, each remembering where it
//! was written so later checks can point at it. Unknown and repeated attributes are errors.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::{Expr, ExprLit, ExprUnary, Lit, LitStr, Token, UnOp};

use crate::ctxt::Ctxt;
use crate::symbol::*;

/// A value from an attribute and the tokens it was written with.
pub struct Spanned<T> {
    pub value: T,
    pub tokens: TokenStream,
}

/// Container attributes: `#[dataflow(table = "...", soft_delete, multi_tenant, cache_ttl = N)]`.
#[derive(Default)]
pub struct ContainerAttrs {
    pub table: Option<Spanned<String>>,
    pub soft_delete: Option<Spanned<()>>,
    pub multi_tenant: Option<Spanned<()>>,
    pub cache_ttl: Option<Spanned<u64>>,
}

/// `relation(target = Category, name = "IN_CATEGORY", on_delete = "restrict")`.
pub struct RelationAttr {
    pub target: syn::Path,
    pub name: Spanned<String>,
    pub on_delete: Option<Spanned<String>>,
}

/// Field attributes.
#[derive(Default)]
pub struct FieldAttrs {
    pub primary_key: Option<Spanned<()>>,
    pub indexed: Option<Spanned<()>>,
    pub unique: Option<Spanned<()>>,
    pub embed: Option<Spanned<()>>,
    pub min: Option<Spanned<f64>>,
    pub max: Option<Spanned<f64>>,
    pub len: Option<Spanned<(Option<usize>, Option<usize>)>>,
    pub pattern: Option<Spanned<String>>,
    pub one_of: Option<Spanned<Vec<String>>>,
    pub relation: Option<Spanned<RelationAttr>>,
}

fn set<T>(cx: &Ctxt, slot: &mut Option<Spanned<T>>, meta: &ParseNestedMeta, value: T) {
    let tokens = meta.path.to_token_stream();
    if slot.is_some() {
        cx.error_spanned_by(&meta.path, format!("duplicate dataflow attribute `{}`", path_name(&meta.path)));
        return;
    }
    *slot = Some(Spanned { value, tokens });
}

fn path_name(path: &syn::Path) -> String {
    path.to_token_stream().to_string().replace(' ', "")
}

fn unknown(meta: &ParseNestedMeta, known: &[&str], place: &str) -> syn::Error {
    meta.error(format!(
        "unknown dataflow {place} attribute `{}`; expected one of: {}",
        path_name(&meta.path),
        known.join(", ")
    ))
}

/// Reads the struct's `#[dataflow(...)]` attributes.
pub fn container(cx: &Ctxt, attrs: &[syn::Attribute]) -> ContainerAttrs {
    let mut out = ContainerAttrs::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident(DATAFLOW)) {
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident(TABLE) {
                let lit: LitStr = meta.value()?.parse()?;
                set(cx, &mut out.table, &meta, lit.value());
                if let Some(t) = out.table.as_mut() {
                    t.tokens = lit.to_token_stream();
                }
            } else if meta.path.is_ident(SOFT_DELETE) {
                set(cx, &mut out.soft_delete, &meta, ());
            } else if meta.path.is_ident(MULTI_TENANT) {
                set(cx, &mut out.multi_tenant, &meta, ());
            } else if meta.path.is_ident(CACHE_TTL) {
                let lit: syn::LitInt = meta.value()?.parse()?;
                let secs: u64 = lit.base10_parse()?;
                if secs == 0 {
                    return Err(syn::Error::new_spanned(lit, "cache_ttl is in seconds and must be at least 1"));
                }
                set(cx, &mut out.cache_ttl, &meta, secs);
            } else {
                return Err(unknown(&meta, CONTAINER_ATTRS, "container"));
            }
            Ok(())
        });
        if let Err(e) = result {
            cx.syn_error(e);
        }
    }
    out
}

/// Reads one field's `#[dataflow(...)]` attributes.
pub fn field(cx: &Ctxt, attrs: &[syn::Attribute]) -> FieldAttrs {
    let mut out = FieldAttrs::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident(DATAFLOW)) {
        let result = attr.parse_nested_meta(|meta| {
            let p = &meta.path;
            if p.is_ident(PRIMARY_KEY) {
                set(cx, &mut out.primary_key, &meta, ());
            } else if p.is_ident(INDEXED) {
                set(cx, &mut out.indexed, &meta, ());
            } else if p.is_ident(UNIQUE) {
                set(cx, &mut out.unique, &meta, ());
            } else if p.is_ident(EMBED) {
                set(cx, &mut out.embed, &meta, ());
            } else if p.is_ident(MIN) || p.is_ident(MAX) {
                let expr: Expr = meta.value()?.parse()?;
                let n = number(&expr)?;
                let slot = if p.is_ident(MIN) { &mut out.min } else { &mut out.max };
                set(cx, slot, &meta, n);
            } else if p.is_ident(LEN) {
                let (mut min, mut max) = (None, None);
                meta.parse_nested_meta(|inner| {
                    let lit: syn::LitInt = inner.value()?.parse()?;
                    let n: usize = lit.base10_parse()?;
                    if inner.path.is_ident(MIN) {
                        min = Some(n);
                    } else if inner.path.is_ident(MAX) {
                        max = Some(n);
                    } else {
                        return Err(inner.error("expected `len(min = N)`, `len(max = N)` or `len(min = N, max = M)`"));
                    }
                    Ok(())
                })?;
                if min.is_none() && max.is_none() {
                    return Err(meta.error("`len` needs `min = N`, `max = N` or both"));
                }
                set(cx, &mut out.len, &meta, (min, max));
            } else if p.is_ident(PATTERN) {
                let lit: LitStr = meta.value()?.parse()?;
                if let Err(e) = regex::Regex::new(&lit.value()) {
                    return Err(syn::Error::new_spanned(&lit, format!("invalid regular expression: {e}")));
                }
                set(cx, &mut out.pattern, &meta, lit.value());
            } else if p.is_ident(ONE_OF) {
                let content;
                syn::parenthesized!(content in meta.input);
                let items = content.parse_terminated(<LitStr as syn::parse::Parse>::parse, Token![,])?;
                if items.is_empty() {
                    return Err(meta.error("`one_of` needs at least one string, e.g. one_of(\"EUR\", \"USD\")"));
                }
                set(cx, &mut out.one_of, &meta, items.iter().map(LitStr::value).collect());
            } else if p.is_ident(RELATION) {
                let (mut target, mut name, mut on_delete) = (None, None, None);
                meta.parse_nested_meta(|inner| {
                    if inner.path.is_ident(TARGET) {
                        target = Some(inner.value()?.parse::<syn::Path>()?);
                    } else if inner.path.is_ident(NAME) {
                        let lit: LitStr = inner.value()?.parse()?;
                        name = Some(Spanned {
                            value: lit.value(),
                            tokens: lit.to_token_stream(),
                        });
                    } else if inner.path.is_ident(ON_DELETE) {
                        let lit: LitStr = inner.value()?.parse()?;
                        on_delete = Some(Spanned {
                            value: lit.value(),
                            tokens: lit.to_token_stream(),
                        });
                    } else {
                        return Err(inner.error(
                            "expected `target = Model`, `name = \"RELATION_NAME\"` or `on_delete = \"restrict\" | \"cascade\" | \"set_null\"`",
                        ));
                    }
                    Ok(())
                })?;
                let (Some(target), Some(name)) = (target, name) else {
                    return Err(meta.error("`relation` needs both `target = Model` and `name = \"RELATION_NAME\"`"));
                };
                set(cx, &mut out.relation, &meta, RelationAttr { target, name, on_delete });
            } else {
                return Err(unknown(&meta, FIELD_ATTRS, "field"));
            }
            Ok(())
        });
        if let Err(e) = result {
            cx.syn_error(e);
        }
    }
    out
}

/// An integer or float literal, optionally negated.
fn number(expr: &Expr) -> syn::Result<f64> {
    match expr {
        Expr::Lit(ExprLit { lit: Lit::Int(i), .. }) => i.base10_parse::<f64>(),
        Expr::Lit(ExprLit { lit: Lit::Float(f), .. }) => f.base10_parse::<f64>(),
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_), expr, ..
        }) => number(expr).map(|n| -n),
        other => Err(syn::Error::new_spanned(other, "expected a number literal, e.g. 0 or 9.5")),
    }
}
