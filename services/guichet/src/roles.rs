//! The roles guichet knows: one line each in the table below.
//!
//! The table generates the [`Role`] enum (what `guichet serve` takes), the
//! role sections of [`GuichetConfig`](crate::GuichetConfig), and the
//! dispatch from a role to its crate's [`RoleSpec`]: validation, database
//! URL, local wiring, migration and build. Adding a role is one line here
//! and one crate that implements `RoleSpec`; the all-in-one command, the
//! deployment manifests' test and the test sandbox all follow from it.

use guichet_platform::config::ConfigError;
use guichet_platform::role::{Local, RoleService, RoleSpec};

macro_rules! roles {
    ($( $(#[$doc:meta])* $variant:ident => $section:ident : $spec:ty ),* $(,)?) => {
        /// Every role of the architecture.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
        pub enum Role {
            $( $(#[$doc])* #[value(name = <$spec as RoleSpec>::NAME)] $variant, )*
        }

        impl Role {
            pub const ALL: &'static [Role] = &[$(Role::$variant),*];

            /// The name `guichet serve` takes (`ingress-counter`).
            pub fn name(self) -> &'static str {
                match self { $( Role::$variant => <$spec as RoleSpec>::NAME, )* }
            }

            /// The configuration section (`counter`), also the name of the
            /// role's default SQLite file and of its test database.
            pub fn section(self) -> &'static str {
                match self { $( Role::$variant => <$spec as RoleSpec>::SECTION, )* }
            }

            pub(crate) fn validate(self, config: &crate::GuichetConfig) -> Result<(), ConfigError> {
                match self { $( Role::$variant => <$spec as RoleSpec>::validate(&config.$section), )* }
            }

            /// The role's database URL in `config`.
            pub fn database_url(self, config: &mut crate::GuichetConfig) -> &mut String {
                match self { $( Role::$variant => <$spec as RoleSpec>::database_url(&mut config.$section), )* }
            }

            pub(crate) fn wire(self, config: &mut crate::GuichetConfig, local: &Local) {
                match self { $( Role::$variant => <$spec as RoleSpec>::wire(&mut config.$section, local), )* }
            }

            pub(crate) async fn migrate(self, db: &sea_orm::DatabaseConnection) -> Result<(), sea_orm::DbErr> {
                use sea_orm_migration::MigratorTrait;
                match self { $( Role::$variant => <<$spec as RoleSpec>::Migrator as MigratorTrait>::up(db, None).await, )* }
            }

            pub(crate) async fn build(
                self,
                config: &crate::GuichetConfig,
                deps: guichet_platform::Deps,
            ) -> anyhow::Result<Box<dyn RoleService>> {
                match self { $( Role::$variant => <$spec as RoleSpec>::build(config.$section.clone(), deps).await, )* }
            }
        }

        /// The configuration of every role, one section each.
        #[derive(Debug, Clone, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct GuichetConfig {
            pub data_dir: std::path::PathBuf,
            /// Laptop mode: the development SMS and email sinks are accepted
            /// by `guichet serve` (with a warning). `guichet up` sets it.
            #[serde(default)]
            pub development: bool,
            /// The town's model (`town/*.toml`); empty: the shipped sample town.
            pub town_dir: std::path::PathBuf,
            pub server: guichet_platform::config::ServerConfig,
            pub bus: guichet_platform::bus::BusConfig,
            pub auth: guichet_platform::auth::AuthConfig,
            pub telemetry: guichet_platform::telemetry::TelemetryConfig,
            pub database: guichet_platform::config::DatabaseConfig,
            pub objects: guichet_platform::objects::ObjectsConfig,
            /// The town's identity, used by every message and page.
            #[serde(default)]
            pub town: guichet_platform::town::Town,
            $( pub $section: <$spec as RoleSpec>::Config, )*
        }
    };
}

roles! {
    IngressTelephony => telephony: guichet_ingress_telephony::Spec,
    IngressEmail => email: guichet_ingress_email::Spec,
    IngressScan => scan: guichet_ingress_scan::Spec,
    IngressCounter => counter: guichet_ingress_counter::Spec,
    Routing => routing: guichet_routing::Spec,
    Dossier => dossier: guichet_dossier::Spec,
    Appointment => appointment: guichet_appointment::Spec,
    Signature => signature: guichet_signature::Spec,
    Notification => notification: guichet_notification::Spec,
    Portal => portal: guichet_portal::Spec,
    Indicators => indicators: guichet_indicators::Spec,
}

impl Role {
    /// Look a role up by its name (`ingress-counter`).
    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.iter().copied().find(|r| r.name() == name)
    }
}
