//! `#[derive(Message)]` for [agent-core](https://docs.rs/agent-core).
//!
//! The derive gives the type its message name and a schema computed once, from the type's
//! `schemars::JsonSchema` (which must be derived too): see `agent_core::message` for what
//! the canonical schema and its digest cover.
//!
//! `#[message(name = "...")]` on the type overrides the name. Refused at compile time,
//! because no schema would describe their wire form: generic types, unions, and
//! `#[serde(with / serialize_with / deserialize_with)]` without a `#[schemars(with = ...)]`
//! or `#[schemars(schema_with = ...)]` beside it.

use proc_macro::TokenStream;
use quote::quote;
use syn::{parse_macro_input, Data, DeriveInput, Fields};

/// Derives `agent_core::Message`: a stable message name and its canonical schema and digest.
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
    match &input.data {
        Data::Struct(data) => check_fields(&data.fields)?,
        Data::Enum(data) => {
            for variant in &data.variants {
                check_custom_serde(&variant.attrs, &variant.ident)?;
                check_fields(&variant.fields)?;
            }
        }
        Data::Union(_) => return Err(syn::Error::new_spanned(ident, "#[derive(Message)] does not support unions")),
    }
    Ok(quote! {
        impl ::agent_core::Message for #ident {
            const NAME: &'static str = #name;
            fn schema() -> &'static ::agent_core::message::MessageSchema {
                static SCHEMA: ::std::sync::OnceLock<::agent_core::message::MessageSchema> =
                    ::std::sync::OnceLock::new();
                SCHEMA.get_or_init(|| ::agent_core::message::MessageSchema::of::<Self>(#name))
            }
        }
    })
}

fn check_fields(fields: &Fields) -> syn::Result<()> {
    for field in fields {
        check_custom_serde(&field.attrs, field)?;
    }
    Ok(())
}

/// Refuses serde's custom (de)serialisers unless a schemars attribute says what they write:
/// otherwise the schema (and digest) would describe a wire form that is not the real one.
fn check_custom_serde(attrs: &[syn::Attribute], at: &dyn quote::ToTokens) -> syn::Result<()> {
    let mut custom = None;
    let mut described = false;
    for attr in attrs {
        let is_serde = attr.path().is_ident("serde");
        if !is_serde && !attr.path().is_ident("schemars") {
            continue;
        }
        // Other options are none of our business: skip their values, whatever shape.
        let _ = attr.parse_nested_meta(|meta| {
            let option = meta.path.get_ident().map(|i| i.to_string()).unwrap_or_default();
            match (is_serde, option.as_str()) {
                (true, "with" | "serialize_with" | "deserialize_with") => custom = Some(option),
                (false, "with" | "schema_with") => described = true,
                _ => {}
            }
            if meta.input.peek(syn::token::Paren) {
                // `rename(serialize = "..")` and the like: skip the group, read on.
                let _group: proc_macro2::TokenStream;
                let content;
                syn::parenthesized!(content in meta.input);
                _group = content.parse()?;
            } else if let Ok(value) = meta.value() {
                let _: syn::Expr = value.parse()?;
            }
            Ok(())
        });
    }
    match custom {
        Some(option) if !described => Err(syn::Error::new_spanned(
            at,
            format!(
                "#[derive(Message)]: `#[serde({option} = ...)]` writes a wire form no schema describes; add \
                 `#[schemars(with = \"TypeOfTheWireForm\")]` or `#[schemars(schema_with = \"path\")]` so the \
                 schema digest covers it"
            ),
        )),
        _ => Ok(()),
    }
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
