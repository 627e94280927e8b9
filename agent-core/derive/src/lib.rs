//! `#[derive(Message)]` for [agent-core](https://docs.rs/agent-core).
//!
//! The derive computes, at compile time, a canonical schema string for the type and its
//! sha256 digest. Two binaries that declare the same type (same name, same field names and
//! types) agree on the digest without sharing code. The canonical schema:
//!
//! - sorts named fields (and enum variants) by name, so field order does not matter;
//! - ignores doc comments and other attributes, except `#[serde(rename = "...")]` on a field
//!   or variant, which changes the name on the wire and therefore the schema;
//! - writes each type path by its last segment (`std::string::String` and `String` agree),
//!   with generic arguments normalised the same way.
//!
//! `#[message(name = "...")]` on the type overrides the type name used in the schema.
//! Generic types are refused: their schema would depend on the parameters.

use proc_macro::TokenStream;
use quote::quote;
use sha2::{Digest, Sha256};
use syn::{parse_macro_input, Data, DeriveInput, Fields, GenericArgument, PathArguments, Type};

/// Derives `agent_core::Message`: a stable type name, canonical schema and schema digest.
#[proc_macro_derive(Message, attributes(message))]
pub fn derive_message(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(tokens) => tokens.into(),
        Err(err) => err.to_compile_error().into(),
    }
}

fn expand(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &input.generics,
            "#[derive(Message)] does not support generic types: a schema digest must be fixed",
        ));
    }
    let ident = &input.ident;
    let name = type_name_override(input)?.unwrap_or_else(|| ident.to_string());
    let body = match &input.data {
        Data::Struct(data) => fields_schema(&data.fields)?,
        Data::Enum(data) => {
            let mut variants = Vec::with_capacity(data.variants.len());
            for variant in &data.variants {
                let vname = serde_rename(&variant.attrs)?.unwrap_or_else(|| variant.ident.to_string());
                variants.push(format!("{vname}{}", fields_schema(&variant.fields)?));
            }
            variants.sort();
            format!("={}", variants.join("|"))
        }
        Data::Union(_) => return Err(syn::Error::new_spanned(ident, "#[derive(Message)] does not support unions")),
    };
    let schema = format!("{name}{body}");
    let digest: [u8; 32] =
        Sha256::new().chain_update(b"agora.schema.v1\n").chain_update(schema.as_bytes()).finalize().into();
    let digest_bytes = digest.iter();
    Ok(quote! {
        impl ::agent_core::Message for #ident {
            const NAME: &'static str = #name;
            const SCHEMA: &'static str = #schema;
            const DIGEST: ::agent_core::SchemaDigest =
                ::agent_core::SchemaDigest::from_bytes([#(#digest_bytes),*]);
        }
    })
}

fn fields_schema(fields: &Fields) -> syn::Result<String> {
    Ok(match fields {
        Fields::Named(named) => {
            let mut parts = Vec::with_capacity(named.named.len());
            for field in &named.named {
                let fname = match serde_rename(&field.attrs)? {
                    Some(renamed) => renamed,
                    None => field.ident.as_ref().map(|i| i.to_string()).unwrap_or_default(),
                };
                parts.push(format!("{fname}:{}", type_schema(&field.ty)));
            }
            parts.sort();
            format!("{{{}}}", parts.join(","))
        }
        Fields::Unnamed(unnamed) => {
            let parts: Vec<String> = unnamed.unnamed.iter().map(|f| type_schema(&f.ty)).collect();
            format!("({})", parts.join(","))
        }
        Fields::Unit => String::new(),
    })
}

/// Renders a type canonically: paths by their last segment, no whitespace.
fn type_schema(ty: &Type) -> String {
    match ty {
        Type::Path(path) if path.qself.is_none() => {
            let Some(last) = path.path.segments.last() else {
                return String::new();
            };
            let mut out = last.ident.to_string();
            if let PathArguments::AngleBracketed(args) = &last.arguments {
                let inner: Vec<String> = args
                    .args
                    .iter()
                    .map(|arg| match arg {
                        GenericArgument::Type(t) => type_schema(t),
                        other => squash(quote!(#other).to_string()),
                    })
                    .collect();
                out.push('<');
                out.push_str(&inner.join(","));
                out.push('>');
            }
            out
        }
        Type::Reference(r) => type_schema(&r.elem),
        Type::Paren(p) => type_schema(&p.elem),
        Type::Group(g) => type_schema(&g.elem),
        Type::Array(a) => {
            let len = &a.len;
            format!("[{};{}]", type_schema(&a.elem), squash(quote!(#len).to_string()))
        }
        Type::Slice(s) => format!("[{}]", type_schema(&s.elem)),
        Type::Tuple(t) => {
            let parts: Vec<String> = t.elems.iter().map(type_schema).collect();
            format!("({})", parts.join(","))
        }
        other => squash(quote!(#other).to_string()),
    }
}

fn squash(s: String) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

fn type_name_override(input: &DeriveInput) -> syn::Result<Option<String>> {
    let mut name = None;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("message")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                let value: syn::LitStr = meta.value()?.parse()?;
                name = Some(value.value());
                Ok(())
            } else {
                Err(meta.error("unknown #[message] option; expected `name = \"...\"`"))
            }
        })?;
    }
    Ok(name)
}

/// Reads `#[serde(rename = "...")]`; other serde options do not change field names.
fn serde_rename(attrs: &[syn::Attribute]) -> syn::Result<Option<String>> {
    let mut renamed = None;
    for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        // Other serde options are none of our business: skip their values, whatever shape.
        let _ = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("rename") {
                if let Ok(value) = meta.value().and_then(|v| v.parse::<syn::LitStr>()) {
                    renamed = Some(value.value());
                }
            } else if let Ok(v) = meta.value() {
                let _: syn::Expr = v.parse()?;
            }
            Ok(())
        });
    }
    Ok(renamed)
}
