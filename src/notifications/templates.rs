//! Message templates: one per locale, recipient and event (`{locale}/{audience}.{event}.txt`,
//! with the blocks `subject`, `title` and `body`), and per locale the two email layouts
//! (`email.txt`, `email.html`) that wrap them with the order's lines. Rendered by MiniJinja;
//! HTML is escaped, text is not.
//!
//! The templates are built into the binary. An operator overrides any of them by putting a
//! file of the same name under `{data dir}/templates/notifications/` (for example
//! `…/de/customer.order_paid.txt`); files there are read again [`RELOAD_EVERY`] at most, so a
//! change shows without a restart. A template that fails to load or render falls back to the
//! built-in one, and that one is rendered by a test for every locale, recipient and event.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use minijinja::Environment;
use parking_lot::Mutex;
use serde::Serialize;

use crate::domain::account::{Locale, NotificationEvent};
use crate::domain::notification::{Audience, audiences};

/// How often override files are looked at again.
pub const RELOAD_EVERY: Duration = Duration::from_secs(10);
/// The longest SMS body sent: two GSM-7 segments of a concatenated message.
pub const SMS_MAX_CHARS: usize = 306;

/// The built-in templates, the same names in every locale.
macro_rules! embedded {
    ($($name:literal),* $(,)?) => {
        &[
            $((concat!("en/", $name), include_str!(concat!("templates/en/", $name))),)*
            $((concat!("de/", $name), include_str!(concat!("templates/de/", $name))),)*
        ]
    };
}

const EMBEDDED: &[(&str, &str)] = embedded![
    "courier.courier_assigned.txt",
    "courier.order_cancelled.txt",
    "courier.order_delivered.txt",
    "courier.order_ready.txt",
    "customer.courier_assigned.txt",
    "customer.order_accepted.txt",
    "customer.order_arriving.txt",
    "customer.order_cancelled.txt",
    "customer.order_created.txt",
    "customer.order_delivered.txt",
    "customer.order_paid.txt",
    "customer.order_picked_up.txt",
    "customer.order_ready.txt",
    "customer.order_refunded.txt",
    "customer.order_rejected.txt",
    "customer.payment_failed.txt",
    "email.html",
    "email.txt",
    "store.courier_assigned.txt",
    "store.order_cancelled.txt",
    "store.order_delivered.txt",
    "store.order_paid.txt",
    "store.order_picked_up.txt",
    "store.order_refunded.txt",
];

/// What a template is rendered with.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MessageContext {
    /// The recipient's name.
    pub name: String,
    /// The order's short reference (the first eight characters of its id, upper case).
    #[serde(rename = "ref")]
    pub reference: String,
    /// The store's name.
    pub store: String,
    /// The order's total, formatted (`12.50 EUR`).
    pub total: String,
    /// A refunded amount, formatted.
    pub amount: String,
    /// Why the store declined the order.
    pub reason: String,
    /// The handoff code (only in the customer's own messages).
    pub code: String,
    /// Units in the order.
    pub items: u32,
    pub lines: Vec<MessageLine>,
    /// Where the recipient sees the order.
    pub link: String,
}

/// One line of the order in an email.
#[derive(Debug, Clone, Serialize)]
pub struct MessageLine {
    pub title: String,
    pub quantity: u32,
    pub price: String,
}

/// A message rendered for every channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// Email subject.
    pub subject: String,
    /// In-app and push title.
    pub title: String,
    /// In-app and push text; the SMS text too.
    pub body: String,
    /// Email, plain text part.
    pub text: String,
    /// Email, HTML part.
    pub html: String,
}

impl Rendered {
    /// The SMS text: the body, cut to [`SMS_MAX_CHARS`].
    pub fn sms(&self) -> String {
        let text = format!("hexmarket: {}", self.body);
        if text.chars().count() <= SMS_MAX_CHARS {
            text
        } else {
            let mut cut: String = text.chars().take(SMS_MAX_CHARS - 1).collect();
            cut.push('…');
            cut
        }
    }
}

/// Why a message could not be rendered.
#[derive(Debug, thiserror::Error)]
#[error("template {name}: {reason}")]
pub struct TemplateError {
    pub name: String,
    pub reason: String,
}

/// The templates, built in and overridden.
#[derive(Clone)]
pub struct Templates {
    overrides: Option<PathBuf>,
    built_in: Arc<Environment<'static>>,
    current: Arc<Mutex<(Instant, Arc<Environment<'static>>)>>,
}

impl Templates {
    /// The built-in templates, overridden by files under `overrides` when given.
    pub fn new(overrides: Option<PathBuf>) -> Self {
        let built_in = Arc::new(environment(None));
        let current = environment(overrides.as_deref());
        Templates {
            overrides,
            built_in,
            current: Arc::new(Mutex::new((Instant::now(), Arc::new(current)))),
        }
    }

    fn environment(&self) -> Arc<Environment<'static>> {
        let Some(dir) = &self.overrides else {
            return Arc::clone(&self.built_in);
        };
        let mut current = self.current.lock();
        if current.0.elapsed() >= RELOAD_EVERY {
            *current = (Instant::now(), Arc::new(environment(Some(dir))));
        }
        Arc::clone(&current.1)
    }

    /// Renders `event` for `audience` in `locale`, the email too: the operator's templates
    /// when they render, the built-in ones otherwise.
    pub fn render(
        &self,
        locale: Locale,
        audience: Audience,
        event: NotificationEvent,
        context: &MessageContext,
    ) -> Result<Rendered, TemplateError> {
        self.render_parts(locale, audience, event, context, true)
    }

    /// Like [`render`](Self::render) without the email (its `text` and `html` are empty): for
    /// the feed, push and SMS.
    pub fn render_short(
        &self,
        locale: Locale,
        audience: Audience,
        event: NotificationEvent,
        context: &MessageContext,
    ) -> Result<Rendered, TemplateError> {
        self.render_parts(locale, audience, event, context, false)
    }

    fn render_parts(
        &self,
        locale: Locale,
        audience: Audience,
        event: NotificationEvent,
        context: &MessageContext,
        email: bool,
    ) -> Result<Rendered, TemplateError> {
        let env = self.environment();
        match render_in(&env, (locale, audience, event), context, email) {
            Ok(rendered) => Ok(rendered),
            Err(e) if !Arc::ptr_eq(&env, &self.built_in) => {
                tracing::warn!(error = %e, "an overriding template failed; using the built-in one");
                render_in(&self.built_in, (locale, audience, event), context, email)
            }
            Err(e) => Err(e),
        }
    }

    /// Every (locale, audience, event) that has a template.
    pub fn all() -> impl Iterator<Item = (Locale, Audience, NotificationEvent)> {
        Locale::ALL.into_iter().flat_map(|locale| {
            NotificationEvent::ALL.into_iter().flat_map(move |event| {
                audiences(event)
                    .iter()
                    .map(move |&audience| (locale, audience, event))
            })
        })
    }
}

fn environment(overrides: Option<&std::path::Path>) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_keep_trailing_newline(true);
    for (name, source) in EMBEDDED {
        let overriding = overrides.and_then(|dir| std::fs::read_to_string(dir.join(name)).ok());
        let added = match overriding {
            Some(text) => env.add_template_owned(*name, text),
            None => env.add_template(name, source),
        };
        if let Err(e) = added {
            tracing::warn!(template = name, error = %e, "template does not parse; using the built-in one");
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "built-in template does not parse");
            }
        }
    }
    env
}

fn render_in(
    env: &Environment<'static>,
    (locale, audience, event): (Locale, Audience, NotificationEvent),
    context: &MessageContext,
    email: bool,
) -> Result<Rendered, TemplateError> {
    let name = format!(
        "{}/{}.{}.txt",
        locale.as_str(),
        audience.as_str(),
        event.as_str()
    );
    let failed = |name: &str, e: minijinja::Error| TemplateError {
        name: name.to_owned(),
        reason: e.to_string(),
    };
    let template = env.get_template(&name).map_err(|e| failed(&name, e))?;
    // Rendering one block at a time needs the mutable state only `eval_to_state` hands out
    // (`render_captured`, its successor, lends the state immutably).
    #[allow(deprecated)]
    let mut state = template
        .eval_to_state(context)
        .map_err(|e| failed(&name, e))?;
    let mut block = |block: &str| {
        state
            .render_block(block)
            .map(|text| text.trim().to_owned())
            .map_err(|e| failed(&name, e))
    };
    let subject = block("subject")?;
    let title = block("title")?;
    let body = block("body")?;
    let layout = |kind: &str| {
        let name = format!("{}/email.{kind}", locale.as_str());
        env.get_template(&name)
            .and_then(|t| {
                t.render(minijinja::context! {
                    subject => &subject,
                    title => &title,
                    body => &body,
                    ..minijinja::Value::from_serialize(context)
                })
            })
            .map_err(|e| failed(&name, e))
    };
    let (text, html) = if email {
        (layout("txt")?, layout("html")?)
    } else {
        (String::new(), String::new())
    };
    Ok(Rendered {
        subject,
        title,
        body,
        text,
        html,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MessageContext {
        MessageContext {
            name: "Jane <Doe>".to_owned(),
            reference: "0190A1B2".to_owned(),
            store: "Pasta & Co".to_owned(),
            total: "23.40 EUR".to_owned(),
            amount: "7.80 EUR".to_owned(),
            reason: "kitchen closed".to_owned(),
            code: "4821".to_owned(),
            items: 3,
            lines: vec![MessageLine {
                title: "Penne".to_owned(),
                quantity: 3,
                price: "7.80 EUR".to_owned(),
            }],
            link: "https://hexmarket.example/orders/0190a1b2".to_owned(),
        }
    }

    #[test]
    fn every_template_renders_with_sample_data_in_every_locale() {
        let templates = Templates::new(None);
        let mut count = 0;
        for (locale, audience, event) in Templates::all() {
            let what = format!("{locale:?} {audience:?} {event:?}");
            let r = templates
                .render(locale, audience, event, &sample())
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(!r.subject.is_empty() && !r.title.is_empty(), "{what}");
            assert!(r.body.contains("0190A1B2"), "{what}: {}", r.body);
            assert!(
                !r.body.contains("{{") && !r.subject.contains("{{"),
                "{what}"
            );
            assert!(
                r.text.contains(&r.body) && r.text.contains("Jane <Doe>"),
                "{what}"
            );
            // HTML escapes what it is given; text does not.
            assert!(r.html.contains("Jane &lt;Doe&gt;"), "{what}");
            assert!(
                r.html.contains("Pasta &amp; Co") || !r.body.contains("Pasta"),
                "{what}"
            );
            assert!(r.sms().chars().count() <= SMS_MAX_CHARS, "{what}");
            // One GSM-7 segment is 160 characters; these stay within two.
            assert!(r.sms().chars().count() <= 2 * 153, "{what}");
            count += 1;
        }
        assert_eq!(count, 44);
    }

    #[test]
    fn the_language_follows_the_locale() {
        let templates = Templates::new(None);
        let en = templates
            .render(
                Locale::En,
                Audience::Customer,
                NotificationEvent::OrderDelivered,
                &sample(),
            )
            .unwrap();
        let de = templates
            .render(
                Locale::De,
                Audience::Customer,
                NotificationEvent::OrderDelivered,
                &sample(),
            )
            .unwrap();
        assert_eq!(en.title, "Delivered");
        assert_eq!(de.title, "Zugestellt");
        assert!(de.html.contains("lang=\"de\""));
    }

    #[test]
    fn an_operator_file_overrides_a_template_and_a_broken_one_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("en")).unwrap();
        std::fs::write(
            dir.path().join("en/customer.order_paid.txt"),
            "{% block subject %}Thanks! {{ ref }}{% endblock %}{% block title %}Paid{% endblock %}{% block body %}Got {{ total }}.{% endblock %}",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("en/customer.order_delivered.txt"),
            "{% block subject %}{{ unclosed",
        )
        .unwrap();
        let templates = Templates::new(Some(dir.path().to_path_buf()));
        let paid = templates
            .render(
                Locale::En,
                Audience::Customer,
                NotificationEvent::OrderPaid,
                &sample(),
            )
            .unwrap();
        assert_eq!(paid.subject, "Thanks! 0190A1B2");
        assert_eq!(paid.body, "Got 23.40 EUR.");
        let delivered = templates
            .render(
                Locale::En,
                Audience::Customer,
                NotificationEvent::OrderDelivered,
                &sample(),
            )
            .unwrap();
        assert_eq!(delivered.title, "Delivered");
    }
}
