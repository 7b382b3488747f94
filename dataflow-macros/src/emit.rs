//! Step 3, emit: from a [`ModelDesc`], the model's metadata and `Model` impl, its `New{Model}`
//! type, typed column constants, its sea-orm entity, and one node type per operation.
//! Every emitted item carries a doc comment and a name a person would choose.

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use crate::describe::{FieldDesc, ModelDesc, RuleDesc, RustType, snake_case};

/// Everything `#[derive(Model)]` generates for one struct.
pub fn emit(model: &ModelDesc) -> TokenStream {
    let model_impl = model_impl(model);
    let new_struct = new_struct(model);
    let columns = columns(model);
    let entity = entity(model);
    let nodes = nodes(model);
    quote! {
        #model_impl
        #new_struct
        #columns
        #entity
        #nodes
    }
}

fn rule_tokens(rule: &RuleDesc) -> TokenStream {
    match rule {
        RuleDesc::Min(n) => quote!(::dataflow_core::Rule::Min(#n)),
        RuleDesc::Max(n) => quote!(::dataflow_core::Rule::Max(#n)),
        RuleDesc::Len(min, max) => {
            let min = option_usize(*min);
            let max = option_usize(*max);
            quote!(::dataflow_core::Rule::Len { min: #min, max: #max })
        }
        RuleDesc::Pattern(p) => quote!(::dataflow_core::Rule::Pattern(#p)),
        RuleDesc::OneOf(items) => quote!(::dataflow_core::Rule::OneOf(&[#(#items),*])),
    }
}

fn option_usize(v: Option<usize>) -> TokenStream {
    match v {
        Some(n) => quote!(::core::option::Option::Some(#n)),
        None => quote!(::core::option::Option::None),
    }
}

fn model_impl(model: &ModelDesc) -> TokenStream {
    let ident = &model.ident;
    let name = ident.to_string();
    let new_ident = format_ident!("New{}", ident);
    let table = &model.table;
    let doc = &model.doc;
    let soft_delete = model.soft_delete;
    let multi_tenant = model.multi_tenant;
    let cache_ttl = model.cache_ttl;
    let pk = model.fields.iter().find(|f| f.primary_key);
    let pk_name = pk.map(|f| f.name.clone()).unwrap_or_default();
    let pk_ident = pk.map(|f| f.ident.clone()).unwrap_or_else(|| format_ident!("id"));

    let field_metas = model.fields.iter().map(|f| {
        let FieldDesc {
            name,
            nullable,
            primary_key,
            indexed,
            unique,
            embed,
            doc,
            ..
        } = f;
        let ty = format_ident!("{}", f.rust.field_type());
        let rules = f.rules.iter().map(rule_tokens);
        quote! {
            ::dataflow_core::FieldMeta {
                name: #name,
                ty: ::dataflow_core::FieldType::#ty,
                nullable: #nullable,
                primary_key: #primary_key,
                indexed: #indexed,
                unique: #unique,
                embed: #embed,
                rules: &[#(#rules),*],
                doc: #doc,
            }
        }
    });
    let relation_metas = model.fields.iter().filter_map(|f| {
        let r = f.relation.as_ref()?;
        let rel_name = &r.name;
        let field = &f.name;
        let target = r.target.segments.last().map(|s| s.ident.to_string()).unwrap_or_default();
        // Naming the target's `meta` also checks, at the attribute's span, that it is a model.
        let target_path = &r.target;
        let on_delete = quote::format_ident!("{}", r.on_delete);
        Some(quote!(::dataflow_core::RelationMeta {
            name: #rel_name,
            field: #field,
            target: #target,
            target_meta: <#target_path as ::dataflow_core::Model>::meta,
            on_delete: ::dataflow_core::OnDelete::#on_delete,
        }))
    });
    let decoders = model.fields.iter().map(|f| {
        let ident = &f.ident;
        let column = &f.name;
        let get = |t: TokenStream| quote!(row.try_get::<#t>("", #column)?);
        let value = match (f.rust, f.nullable) {
            (RustType::Narrow(..), false) => {
                let raw = get(quote!(i64));
                quote!(::core::convert::TryFrom::try_from(#raw).map_err(|_| ::dataflow_core::sea_orm::DbErr::Type(::std::format!("column {} is out of range for its Rust type", #column)))?)
            }
            (RustType::Narrow(..), true) => {
                let raw = get(quote!(::core::option::Option<i64>));
                quote!(#raw.map(::core::convert::TryFrom::try_from).transpose().map_err(|_| ::dataflow_core::sea_orm::DbErr::Type(::std::format!("column {} is out of range for its Rust type", #column)))?)
            }
            (RustType::F32, false) => {
                let raw = get(quote!(f64));
                quote!(#raw as f32)
            }
            (RustType::F32, true) => {
                let raw = get(quote!(::core::option::Option<f64>));
                quote!(#raw.map(|v| v as f32))
            }
            _ => {
                let ty = &f.ty;
                get(quote!(#ty))
            }
        };
        quote!(#ident: #value)
    });

    quote! {
        impl ::dataflow_core::Model for #ident {
            type New = #new_ident;

            fn meta() -> &'static ::dataflow_core::ModelMeta {
                static META: ::dataflow_core::ModelMeta = ::dataflow_core::ModelMeta {
                    name: #name,
                    table: #table,
                    primary_key: #pk_name,
                    fields: &[#(#field_metas),*],
                    relations: &[#(#relation_metas),*],
                    soft_delete: #soft_delete,
                    multi_tenant: #multi_tenant,
                    cache_ttl_secs: #cache_ttl,
                    doc: #doc,
                };
                &META
            }

            fn from_row(row: &::dataflow_core::sea_orm::QueryResult) -> ::core::result::Result<Self, ::dataflow_core::sea_orm::DbErr> {
                ::core::result::Result::Ok(Self { #(#decoders),* })
            }

            fn primary_key(&self) -> i64 {
                self.#pk_ident
            }
        }
    }
}

fn new_struct(model: &ModelDesc) -> TokenStream {
    let ident = &model.ident;
    let vis = &model.vis;
    let new_ident = format_ident!("New{}", ident);
    let doc = format!("The fields of a new [`{ident}`]: every field but the primary key, which the database generates.");
    let fields = model.fields.iter().filter(|f| !f.primary_key).map(|f| {
        let FieldDesc {
            ident,
            ty,
            forwarded_attrs,
            ..
        } = f;
        let default = f.nullable.then(|| quote!(#[serde(default)]));
        let fallback_doc = forwarded_attrs.iter().all(|a| !a.path().is_ident("doc")).then(|| {
            let text = format!("The `{ident}` field.");
            quote!(#[doc = #text])
        });
        quote! {
            #fallback_doc
            #(#forwarded_attrs)*
            #default
            pub #ident: #ty
        }
    });
    let from_fields = model.fields.iter().filter(|f| !f.primary_key).map(|f| {
        let ident = &f.ident;
        quote!(#ident: value.#ident)
    });
    let from_doc = format!("The fields of an existing [`{ident}`], ready to create a copy.");
    quote! {
        #[doc = #doc]
        #[derive(::core::fmt::Debug, ::core::clone::Clone, ::dataflow_core::serde::Serialize, ::dataflow_core::serde::Deserialize, ::dataflow_core::schemars::JsonSchema)]
        #[serde(crate = "::dataflow_core::serde", deny_unknown_fields)]
        #[schemars(crate = "::dataflow_core::schemars")]
        #vis struct #new_ident {
            #(#fields),*
        }

        impl ::core::convert::From<#ident> for #new_ident {
            #[doc = #from_doc]
            fn from(value: #ident) -> Self {
                #new_ident { #(#from_fields),* }
            }
        }
    }
}

fn columns(model: &ModelDesc) -> TokenStream {
    let ident = &model.ident;
    let consts = model.fields.iter().map(|f| {
        let const_ident = format_ident!("{}", f.name.to_uppercase());
        let name = &f.name;
        let ty = &f.inner_ty;
        let doc = format!("Typed handle on the `{name}` column, for filters and sorts: `{ident}::{const_ident}.eq(...)`.");
        quote! {
            #[doc = #doc]
            pub const #const_ident: ::dataflow_core::Column<#ty> = ::dataflow_core::Column::new(#name);
        }
    });
    quote! {
        impl #ident {
            #(#consts)*
        }
    }
}

fn entity(model: &ModelDesc) -> TokenStream {
    let vis = &model.vis;
    let ident = &model.ident;
    let module = format_ident!("{}_entity", snake_case(&ident.to_string()));
    let table = &model.table;
    let doc = format!(
        "The sea-orm entity of [`{ident}`]'s table `{table}`, for queries of your own (`{module}::Entity::find()`). \
         It includes the columns dataflow maintains (`version`, `created_at`, ...). Write through the nodes so \
         caches and projections stay in step."
    );
    let fields = model.fields.iter().map(|f| {
        let ident = &f.ident;
        let base = match f.rust {
            RustType::I64 | RustType::Narrow(..) => quote!(i64),
            RustType::F64 | RustType::F32 => quote!(f64),
            RustType::Bool => quote!(bool),
            RustType::String => quote!(::std::string::String),
            RustType::DateTime => quote!(::dataflow_core::chrono::DateTime<::dataflow_core::chrono::Utc>),
            RustType::Json => quote!(::dataflow_core::serde_json::Value),
        };
        let ty = if f.nullable { quote!(::core::option::Option<#base>) } else { base };
        let pk = f.primary_key.then(|| quote!(#[sea_orm(primary_key)]));
        let json = (f.rust == RustType::Json).then(|| quote!(#[sea_orm(column_type = "JsonBinary")]));
        let doc = format!("Column `{}`.", f.name);
        quote!(#[doc = #doc] #pk #json pub #ident: #ty)
    });
    let tenant = model
        .multi_tenant
        .then(|| quote!(#[doc = "The tenant that owns the row."] pub tenant_id: ::std::string::String,));
    let deleted = model
        .soft_delete
        .then(|| quote!(#[doc = "When the row was soft-deleted."] pub deleted_at: ::core::option::Option<::dataflow_core::chrono::DateTime<::dataflow_core::chrono::Utc>>,));
    quote! {
        #[doc = #doc]
        #[allow(missing_docs)]
        #vis mod #module {
            use ::dataflow_core::sea_orm;
            use ::dataflow_core::sea_orm::entity::prelude::*;

            /// One row of the table, as sea-orm reads it.
            #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
            #[sea_orm(table_name = #table)]
            pub struct Model {
                #(#fields,)*
                #tenant
                /// Grows by one with every committed write.
                pub version: i64,
                /// When the row was inserted.
                pub created_at: ::dataflow_core::chrono::DateTime<::dataflow_core::chrono::Utc>,
                /// When the row was last written.
                pub updated_at: ::dataflow_core::chrono::DateTime<::dataflow_core::chrono::Utc>,
                #deleted
            }

            /// Relations are kept in the graph store; the entity declares none.
            #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
            pub enum Relation {}

            impl ActiveModelBehavior for ActiveModel {}
        }
    }
}

struct NodeSpec {
    op: &'static str,
    /// The `StoreKind` variant of the node's primary store.
    store: &'static str,
    module: &'static str,
    input: &'static str,
    output: &'static str,
    generic_input: bool,
    generic_output: bool,
    /// Whether the core module has `output_schema_given`: the output schema narrows with the
    /// static input (a Read with `required: true`).
    narrows_output: bool,
    summary: &'static str,
}

const NODES: &[NodeSpec] = &[
    NodeSpec {
        op: "Create",
        store: "Relational",
        module: "create",
        input: "CreateInput",
        output: "CreateOutput",
        generic_input: true,
        generic_output: true,
        narrows_output: false,
        summary: "Validates one {M} record, inserts it and returns the stored row with its generated id.",
    },
    NodeSpec {
        op: "Read",
        store: "Cache",
        module: "read",
        input: "ReadInput",
        output: "ReadOutput",
        generic_input: false,
        generic_output: true,
        narrows_output: true,
        summary: "Gets one {M} by primary key through the read-through cache, falling back to the relational store.",
    },
    NodeSpec {
        op: "Update",
        store: "Relational",
        module: "update",
        input: "UpdateInput",
        output: "UpdateOutput",
        generic_input: false,
        generic_output: true,
        narrows_output: false,
        summary: "Patches {M} rows by id (with an optional version check) or by filter, and returns what changed.",
    },
    NodeSpec {
        op: "Delete",
        store: "Relational",
        module: "delete",
        input: "DeleteInput",
        output: "DeleteOutput",
        generic_input: false,
        generic_output: false,
        narrows_output: false,
        summary: "Deletes {M} rows by id or by filter (soft delete where the model asks for it).",
    },
    NodeSpec {
        op: "List",
        store: "Relational",
        module: "list",
        input: "ListInput",
        output: "ListOutput",
        generic_input: false,
        generic_output: true,
        narrows_output: false,
        summary: "Lists {M} rows: filter, sort, keyset pagination and an optional total count.",
    },
    NodeSpec {
        op: "BulkUpsert",
        store: "Relational",
        module: "bulk_upsert",
        input: "BulkUpsertInput",
        output: "BulkUpsertOutput",
        generic_input: false,
        generic_output: false,
        narrows_output: false,
        summary: "Inserts or updates many {M} rows in batches in one transaction; invalid rows are reported by index and the valid ones land.",
    },
    NodeSpec {
        op: "Aggregate",
        store: "Relational",
        module: "aggregate",
        input: "AggregateInput",
        output: "AggregateOutput",
        generic_input: false,
        generic_output: false,
        narrows_output: false,
        summary: "Groups {M} rows and computes count, sum, avg, min and max under a filter.",
    },
    NodeSpec {
        op: "Search",
        store: "Vector",
        module: "search",
        input: "SearchInput",
        output: "SearchOutput",
        generic_input: false,
        generic_output: true,
        narrows_output: false,
        summary: "Finds the {M} rows most similar to a text or vector over its embed fields, with metadata filters, hydrated from the relational store.",
    },
    NodeSpec {
        op: "Graph",
        store: "Graph",
        module: "graph",
        input: "GraphInput",
        output: "GraphOutput",
        generic_input: false,
        generic_output: true,
        narrows_output: false,
        summary: "Links and unlinks {M} rows along declared relations, and finds neighbours and shortest paths in the graph.",
    },
];

fn nodes(model: &ModelDesc) -> TokenStream {
    let ident = &model.ident;
    let vis = &model.vis;
    let name = ident.to_string();
    let items = NODES.iter().map(|spec| {
        let node = format_ident!("{}{}Node", ident, spec.op);
        let input = format_ident!("{}{}Input", ident, spec.op);
        let output = format_ident!("{}{}Output", ident, spec.op);
        let module = format_ident!("{}", spec.module);
        let core_input = type_path(spec.module, spec.input, spec.generic_input, ident);
        let core_output = type_path(spec.module, spec.output, spec.generic_output, ident);
        let kind = format_ident!("{}", spec.op);
        let store = format_ident!("{}", spec.store);
        let summary = spec.summary.replace("{M}", &name);
        let node_name = node.to_string();
        let narrowed_output = spec.narrows_output.then(|| {
            quote! {
                fn output_schema_given(&self, static_input: &::dataflow_core::serde_json::Value) -> ::core::option::Option<::dataflow_core::schemars::Schema> {
                    ::dataflow_core::nodes::#module::output_schema_given::<#ident>(static_input)
                }
            }
        });
        let node_doc = format!("{summary}\n\nA workflow node registered as `{node_name}`; input [`{input}`], output [`{output}`].");
        let input_doc = format!("Input of [`{node_name}`].");
        let output_doc = format!("Output of [`{node_name}`].");
        quote! {
            #[doc = #node_doc]
            #[derive(::core::fmt::Debug, ::core::clone::Clone, ::core::marker::Copy, ::core::default::Default)]
            #vis struct #node;

            #[doc = #input_doc]
            #vis type #input = #core_input;

            #[doc = #output_doc]
            #vis type #output = #core_output;

            #[::dataflow_core::async_trait::async_trait]
            impl ::dataflow_core::Node for #node {
                type Input = #input;
                type Output = #output;

                fn descriptor(&self) -> ::dataflow_core::NodeDescriptor {
                    ::dataflow_core::NodeDescriptor {
                        type_name: #node_name,
                        model: <#ident as ::dataflow_core::Model>::meta(),
                        kind: ::dataflow_core::NodeKind::#kind,
                        store: ::dataflow_core::StoreKind::#store,
                        summary: #summary,
                    }
                }

                async fn run(&self, ctx: &::dataflow_core::Context, input: Self::Input) -> ::dataflow_core::Result<Self::Output> {
                    ::dataflow_core::nodes::#module::run::<#ident>(ctx, input).await
                }

                #narrowed_output
            }
        }
    });
    let assoc = NODES.iter().map(|spec| {
        let op = format_ident!("{}", spec.op);
        let node = format_ident!("{}{}Node", ident, spec.op);
        quote!(type #op = #node;)
    });
    quote! {
        #(#items)*

        impl ::dataflow_core::ModelNodes for #ident {
            #(#assoc)*
        }
    }
}

fn type_path(module: &str, ty: &str, generic: bool, model: &Ident) -> TokenStream {
    let module = format_ident!("{}", module);
    let ty = format_ident!("{}", ty);
    if generic {
        quote!(::dataflow_core::nodes::#module::#ty<#model>)
    } else {
        quote!(::dataflow_core::nodes::#module::#ty)
    }
}
