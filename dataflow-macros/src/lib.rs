//! `#[derive(Model)]` for dataflow-rs: parse the struct's `#[dataflow(...)]` attributes
//! (`attr`), describe the model (`describe`), emit its code (`emit`). Every attribute
//! mistake is reported at once, each underlined where it was written.

#![warn(missing_docs)]

mod attr;
mod ctxt;
mod describe;
mod emit;
mod symbol;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Derives `dataflow_core::Model` and the model's nodes, `New{Model}` type, typed column
/// constants and sea-orm entity. See the `dataflow-core` crate documentation for the attributes.
#[proc_macro_derive(Model, attributes(dataflow))]
pub fn derive_model(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(&input).unwrap_or_else(ctxt::to_compile_errors).into()
}

fn expand(input: &DeriveInput) -> Result<proc_macro2::TokenStream, Vec<syn::Error>> {
    let cx = ctxt::Ctxt::new();
    let model = describe::describe(&cx, input);
    cx.check()?;
    Ok(emit::emit(&model.expect("described without errors")))
}
