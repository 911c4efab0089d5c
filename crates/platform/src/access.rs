//! Who may call what: one table for every gRPC method guichet serves.
//!
//! Every call goes through [`admit`] in the auth interceptor before its
//! handler runs. A method missing from the table is refused (guichet never
//! serves a call it has no rule for), so a new RPC cannot be reachable by
//! everyone by accident. Handlers still decide, for the callers admitted
//! here, what each may see (restricted groups, own work items, link secrets).
//!
//! Callers are of three kinds:
//! * people, by role: `agent`, `supervisor` (also an agent), `admin` (every
//!   person's role), `process_owner`;
//! * devices and systems outside guichet, each with a role of its own and
//!   exactly the calls it needs: `kiosk` (a hall kiosk or waiting-room
//!   screen), `citizen_pages` (the portal's public pages, acting for a
//!   citizen who holds a link secret) and `partner` (another municipal
//!   system: a scanning station, the PBX's call records, a wallboard);
//! * guichet's own roles calling each other: a `service` token names the
//!   calling role (`guichet-routing`) and the role it is for (audience
//!   `<audience>/dossier`), and is admitted only on the calls that caller
//!   makes.
//!
//! `guichet access` prints this table; the README's copy is checked against
//! it by a test, and an end-to-end test calls every method with every kind
//! of caller.

use tonic::Status;

use crate::auth::{Principal, Role};

/// One method and who may call it.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// `Service/Method`, as in the gRPC path without its package.
    pub method: &'static str,
    /// Roles admitted (people by hierarchy, devices and systems exactly).
    pub roles: &'static [Role],
    /// guichet roles admitted with their service token (`routing`…).
    pub from: &'static [&'static str],
}

/// The short name of each guichet API package (`guichet.<name>.v1`): the
/// audiences of service tokens.
pub const PACKAGES: &[&str] = &[
    "appointment",
    "counter",
    "dossier",
    "email",
    "indicators",
    "notification",
    "routing",
    "scan",
    "signature",
    "telephony",
];

use Role::{Admin, Agent, CitizenPages, Kiosk, Partner, ProcessOwner, Supervisor};

const fn rule(method: &'static str, roles: &'static [Role], from: &'static [&'static str]) -> Rule {
    Rule {
        method,
        roles,
        from,
    }
}

const NONE: &[&str] = &[];
const AGENTS: &[Role] = &[Agent];
const SUPERVISORS: &[Role] = &[Supervisor];
const ADMINS: &[Role] = &[Admin];
const OWNERS: &[Role] = &[ProcessOwner];
/// A citizen acting through the public pages or an agent for them.
const CITIZEN: &[Role] = &[Agent, CitizenPages];
/// What the hall shows and lets a visitor do.
const HALL: &[Role] = &[Agent, Kiosk, CitizenPages];
/// Public facts of the town's offer (sites, appointment types, free slots).
const PUBLIC_OFFER: &[Role] = &[Agent, ProcessOwner, CitizenPages, Kiosk, Partner];

/// Every method, by package then service, in the proto files' order.
pub const RULES: &[Rule] = &[
    // guichet.appointment.v1
    rule("AppointmentService/GetSite", PUBLIC_OFFER, NONE),
    rule("AppointmentService/ListSites", PUBLIC_OFFER, NONE),
    rule(
        "AppointmentService/ListAppointmentTypes",
        PUBLIC_OFFER,
        &["dossier"],
    ),
    rule(
        "AppointmentService/SearchAvailability",
        PUBLIC_OFFER,
        &["dossier"],
    ),
    rule("AppointmentService/GetBooking", CITIZEN, NONE),
    rule("AppointmentService/ListBookings", AGENTS, &["counter"]),
    rule("AppointmentService/BookAppointment", CITIZEN, NONE),
    rule("AppointmentService/RescheduleBooking", CITIZEN, NONE),
    rule("AppointmentService/CancelBooking", CITIZEN, NONE),
    rule("AppointmentService/RevokeBookingLink", CITIZEN, NONE),
    rule("AppointmentService/CheckInBooking", AGENTS, &["counter"]),
    rule("AppointmentService/MarkBookingSeen", AGENTS, NONE),
    rule("AppointmentService/MarkNoShow", AGENTS, NONE),
    rule("AppointmentService/JoinWaitingList", CITIZEN, NONE),
    rule("AppointmentService/LeaveWaitingList", CITIZEN, NONE),
    rule("AppointmentService/CreateScheduleException", AGENTS, NONE),
    rule("AppointmentService/ListScheduleExceptions", AGENTS, NONE),
    rule("AppointmentService/DeleteScheduleException", AGENTS, NONE),
    rule("AppointmentService/ExportBookingIcs", CITIZEN, NONE),
    rule("AppointmentService/ExportDeskAgenda", AGENTS, NONE),
    // guichet.counter.v1
    rule("CounterService/IssueTicket", HALL, NONE),
    rule("CounterService/CallNext", AGENTS, NONE),
    rule("CounterService/RecallTicket", AGENTS, NONE),
    rule("CounterService/StartService", AGENTS, NONE),
    rule("CounterService/FinishService", AGENTS, NONE),
    rule("CounterService/MarkNoShow", AGENTS, NONE),
    rule("CounterService/TransferTicket", AGENTS, NONE),
    rule("CounterService/GetTicket", &[Agent, Kiosk], NONE),
    rule("CounterService/GetTicketPosition", HALL, NONE),
    rule(
        "CounterService/ListWaitingTimes",
        &[Agent, Kiosk, CitizenPages, Partner],
        NONE,
    ),
    rule("CounterService/WatchBoard", &[Agent, Kiosk], NONE),
    rule("CounterService/CheckInAppointment", HALL, NONE),
    rule("CounterService/ListTickets", HALL, NONE),
    rule("CounterService/ListServices", HALL, NONE),
    // guichet.dossier.v1
    rule("DossierService/ResolveCitizen", CITIZEN, NONE),
    rule("DossierService/GetCitizen", AGENTS, &["notification"]),
    rule("DossierService/ListCitizens", AGENTS, NONE),
    rule("DossierService/UpdateCitizen", AGENTS, NONE),
    rule("DossierService/MergeCitizens", AGENTS, &["routing"]),
    rule("DossierService/SplitCitizen", AGENTS, NONE),
    rule("DossierService/ExportCitizen", SUPERVISORS, NONE),
    rule("DossierService/EraseCitizen", ADMINS, NONE),
    rule("DossierService/CorrelateIntake", &[], &["routing"]),
    rule("DossierService/ListIntakePlacements", AGENTS, NONE),
    rule("DossierService/OpenDossier", AGENTS, NONE),
    rule("DossierService/GetDossier", AGENTS, &["notification"]),
    rule("DossierService/FollowDossier", &[CitizenPages], NONE),
    rule("DossierService/ListDossiers", AGENTS, NONE),
    rule("DossierService/UpdateDossier", AGENTS, NONE),
    rule("DossierService/TransitionDossier", AGENTS, &["signature"]),
    rule("DossierService/ReopenDossier", SUPERVISORS, NONE),
    rule("DossierService/SetLegalHold", SUPERVISORS, NONE),
    rule("DossierService/GetGuidance", AGENTS, &["signature"]),
    rule("DossierService/AddNote", AGENTS, NONE),
    rule("DossierService/AddDocument", CITIZEN, &["signature"]),
    rule("DossierService/GetDocument", AGENTS, NONE),
    rule("DossierService/ListDocuments", AGENTS, &["signature"]),
    rule(
        "DossierService/LinkDossier",
        AGENTS,
        &["signature", "appointment"],
    ),
    rule("DossierService/RecordContact", &[], &["routing"]),
    rule("DossierService/ListDossierTimeline", AGENTS, NONE),
    rule("DossierService/ListCitizenTimeline", AGENTS, NONE),
    rule("DossierService/ListProcesses", &[Agent, ProcessOwner], NONE),
    rule(
        "DossierService/GetProcess",
        &[Agent, ProcessOwner],
        &["signature"],
    ),
    rule(
        "DossierService/MigrateDossiers",
        &[Supervisor, ProcessOwner],
        NONE,
    ),
    rule("DossierService/PurgeExpired", ADMINS, NONE),
    rule("DossierService/ListAuditEntries", SUPERVISORS, NONE),
    rule("ProcessStudioService/GetProcessUsage", OWNERS, NONE),
    rule("ProcessStudioService/GetProcessSource", OWNERS, NONE),
    rule("ProcessStudioService/ListDrafts", OWNERS, NONE),
    rule("ProcessStudioService/GetDraft", OWNERS, NONE),
    rule("ProcessStudioService/CreateDraft", OWNERS, NONE),
    rule("ProcessStudioService/UpdateDraftText", OWNERS, NONE),
    rule("ProcessStudioService/EditDraft", OWNERS, NONE),
    rule("ProcessStudioService/DeleteDraft", OWNERS, NONE),
    rule("ProcessStudioService/DryRun", OWNERS, NONE),
    rule("ProcessStudioService/PublishDraft", OWNERS, NONE),
    rule("ProcessStudioService/ListPublications", OWNERS, NONE),
    rule("ProcessStudioService/ExportCatalog", OWNERS, NONE),
    rule("ProcessStudioService/ImportCatalog", OWNERS, NONE),
    // guichet.email.v1
    rule("EmailService/SendReply", AGENTS, NONE),
    rule("EmailService/GetEmailMessage", AGENTS, NONE),
    rule("EmailService/ListEmailMessages", AGENTS, NONE),
    // guichet.indicators.v1
    rule("IndicatorService/ListDefinitions", SUPERVISORS, NONE),
    rule("IndicatorService/GetFigures", SUPERVISORS, NONE),
    rule("IndicatorService/ComparePeriods", SUPERVISORS, NONE),
    rule("IndicatorService/DrillDown", SUPERVISORS, NONE),
    rule("IndicatorService/ExportCsv", SUPERVISORS, NONE),
    rule("IndicatorService/GetQueueNow", &[Supervisor, Partner], NONE),
    // guichet.notification.v1
    rule("NotificationService/GetNotification", AGENTS, NONE),
    rule("NotificationService/ListNotifications", AGENTS, NONE),
    rule("NotificationService/RetryNotification", SUPERVISORS, NONE),
    rule("NotificationService/ClearSuppression", SUPERVISORS, NONE),
    rule("NotificationService/ListTemplates", OWNERS, NONE),
    rule("NotificationService/GetTemplate", OWNERS, NONE),
    rule("NotificationService/UpdateTemplate", OWNERS, NONE),
    rule("NotificationService/ResetTemplate", OWNERS, NONE),
    // guichet.routing.v1
    rule("QueueService/SetPresence", AGENTS, NONE),
    rule("QueueService/GetAgent", AGENTS, NONE),
    rule("QueueService/ListAgents", SUPERVISORS, NONE),
    rule("QueueService/UpdateAgent", SUPERVISORS, NONE),
    rule("QueueService/TakeNext", AGENTS, NONE),
    rule("QueueService/WatchOffers", AGENTS, NONE),
    rule("QueueService/AcceptOffer", AGENTS, NONE),
    rule("QueueService/RejectOffer", AGENTS, NONE),
    rule("QueueService/WrapUpWorkItem", AGENTS, NONE),
    rule("QueueService/CompleteWorkItem", AGENTS, NONE),
    rule("QueueService/CancelWorkItem", AGENTS, NONE),
    rule("QueueService/TransferWorkItem", AGENTS, NONE),
    rule("QueueService/GetWorkItem", AGENTS, NONE),
    rule("QueueService/ListWorkItems", AGENTS, NONE),
    rule("QueueService/ListQueues", AGENTS, NONE),
    rule(
        "QueueService/GetQueueStatistics",
        &[Supervisor, Partner],
        NONE,
    ),
    rule("QueueService/WatchQueue", &[Supervisor, Partner], NONE),
    rule("QueueService/ExplainClassification", SUPERVISORS, NONE),
    rule("QueueService/ResolveCitizenCandidate", AGENTS, NONE),
    rule("QueueService/RecordCallbackAttempt", AGENTS, NONE),
    rule("QueueService/GetRoutingRules", OWNERS, NONE),
    rule("QueueService/TryRoutingRules", OWNERS, NONE),
    rule("QueueService/PublishRoutingRules", OWNERS, NONE),
    rule("QueueService/ListRulesPublications", OWNERS, NONE),
    // guichet.scan.v1
    rule("ScanService/UploadScan", &[Agent, Partner], NONE),
    rule("ScanService/GetScanFile", AGENTS, NONE),
    rule("ScanService/ListScanFiles", AGENTS, NONE),
    rule("ScanService/ReleaseScanFile", SUPERVISORS, NONE),
    // guichet.signature.v1
    rule(
        "SignatureService/CreateSignatureRequest",
        AGENTS,
        &["dossier"],
    ),
    rule("SignatureService/GetSignatureRequest", AGENTS, NONE),
    rule("SignatureService/ListSignatureRequests", AGENTS, NONE),
    rule("SignatureService/SendCode", AGENTS, NONE),
    rule("SignatureService/ResendCode", AGENTS, NONE),
    rule("SignatureService/ConfirmCode", AGENTS, NONE),
    rule("SignatureService/DeclineSignatureRequest", AGENTS, NONE),
    rule("SignatureService/CancelSignatureRequest", AGENTS, NONE),
    rule("SignatureService/ReissueSignatureRequest", AGENTS, NONE),
    rule("SignatureService/GetEvidence", AGENTS, NONE),
    rule("SignatureService/Verify", AGENTS, NONE),
    rule("SignatureService/ListSignatureEvents", AGENTS, NONE),
    // guichet.telephony.v1
    rule("TelephonyService/RequestCallback", &[Agent, Partner], NONE),
    rule("TelephonyService/ImportCdr", &[Supervisor, Partner], NONE),
    rule("TelephonyService/GetCall", AGENTS, NONE),
    rule("TelephonyService/ListExtensions", SUPERVISORS, NONE),
    rule("TelephonyService/ListCalls", AGENTS, NONE),
    rule("TelephonyService/SetExtension", ADMINS, NONE),
    rule("TelephonyService/DeleteExtension", ADMINS, NONE),
];

/// The gRPC path of the call being served (`/guichet.dossier.v1.DossierService/GetDossier`),
/// put into the request's extensions by the gRPC server for the interceptor.
#[derive(Debug, Clone)]
pub struct CalledMethod(pub String);

/// The rule of `path`, with the package short name (`dossier`).
pub fn rule_of(path: &str) -> Option<(&'static str, &'static Rule)> {
    let rest = path.strip_prefix("/guichet.")?;
    let (package, rest) = rest.split_once('.')?;
    let (_version, method) = rest.split_once('.')?;
    let package = PACKAGES.iter().find(|p| **p == package)?;
    RULES
        .iter()
        .find(|r| r.method == method)
        .map(|r| (*package, r))
}

/// Whether `p` may call `path`; `audience` is the plain audience of
/// people's tokens (a service token's is `<audience>/<package>`).
pub fn admit(p: &Principal, path: &str, audience: &str) -> Result<(), Status> {
    let Some((package, rule)) = rule_of(path) else {
        return Err(Status::permission_denied(format!(
            "guichet has no access rule for {path}; calls without one are refused"
        )));
    };
    if p.roles.contains(&Role::Service) {
        let scoped = format!("{audience}/{package}");
        if p.audience != scoped {
            return Err(Status::permission_denied(format!(
                "access: this service token is not for the {package} role"
            )));
        }
        let from = p.subject.strip_prefix("guichet-").unwrap_or_default();
        if rule.from.contains(&from) {
            return Ok(());
        }
        return Err(Status::permission_denied(format!(
            "access: the {from} role may not call {}",
            rule.method
        )));
    }
    if p.audience != audience {
        return Err(Status::permission_denied(
            "access: a token scoped to one role is for guichet's service calls only",
        ));
    }
    if rule.roles.iter().any(|r| p.has(*r)) {
        return Ok(());
    }
    let held: Vec<&str> = p.roles.iter().map(|r| r.as_str()).collect();
    Err(Status::permission_denied(format!(
        "access: {} requires one of [{}]; the caller holds [{}]",
        rule.method,
        names(rule),
        held.join(", ")
    )))
}

fn names(rule: &Rule) -> String {
    rule.roles
        .iter()
        .map(|r| r.as_str().to_owned())
        .chain(rule.from.iter().map(|f| format!("service from {f}")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The table as Markdown (README's "Who may call what").
pub fn markdown() -> String {
    let mut out = String::from(
        "| method | people and devices | guichet roles (service token) |\n|---|---|---|\n",
    );
    for r in RULES {
        let roles: Vec<&str> = r.roles.iter().map(|r| r.as_str()).collect();
        let roles = if roles.is_empty() {
            "—".to_owned()
        } else {
            roles.join(", ")
        };
        let from = if r.from.is_empty() {
            "—".to_owned()
        } else {
            r.from.join(", ")
        };
        out.push_str(&format!("| `{}` | {roles} | {from} |\n", r.method));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(roles: &[Role]) -> Principal {
        Principal {
            subject: "agent-1".into(),
            roles: roles.to_vec(),
            groups: vec![],
            audience: "guichet".into(),
        }
    }

    fn service(from: &str, to: &str) -> Principal {
        Principal {
            subject: format!("guichet-{from}"),
            roles: vec![Role::Service],
            groups: vec![],
            audience: format!("guichet/{to}"),
        }
    }

    const CITIZENS: &str = "/guichet.dossier.v1.DossierService/ListCitizens";
    const INTAKE: &str = "/guichet.dossier.v1.DossierService/CorrelateIntake";

    #[test]
    fn every_method_has_one_rule() {
        let mut seen = std::collections::HashSet::new();
        for r in RULES {
            assert!(seen.insert(r.method), "{} twice", r.method);
            assert!(
                !r.roles.is_empty() || !r.from.is_empty(),
                "{} admits nobody",
                r.method
            );
            assert!(!r.roles.contains(&Role::Service), "{}", r.method);
        }
    }

    #[test]
    fn a_kiosk_may_issue_a_ticket_but_not_read_the_directory() {
        let kiosk = person(&[Role::Kiosk]);
        admit(
            &kiosk,
            "/guichet.counter.v1.CounterService/IssueTicket",
            "guichet",
        )
        .unwrap();
        let e = admit(&kiosk, CITIZENS, "guichet").unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("ListCitizens"), "{}", e.message());
    }

    #[test]
    fn people_roles_follow_the_hierarchy_and_devices_do_not() {
        admit(&person(&[Role::Supervisor]), CITIZENS, "guichet").unwrap();
        admit(&person(&[Role::Admin]), CITIZENS, "guichet").unwrap();
        assert!(admit(&person(&[Role::Partner]), CITIZENS, "guichet").is_err());
        assert!(admit(&person(&[Role::CitizenPages]), CITIZENS, "guichet").is_err());
        // An admin is every person, not a device or a guichet role.
        assert!(admit(&person(&[Role::Admin]), INTAKE, "guichet").is_err());
    }

    #[test]
    fn a_service_token_is_scoped_to_its_caller_and_its_audience() {
        admit(&service("routing", "dossier"), INTAKE, "guichet").unwrap();
        // Another role's token, or routing's token for another role, is refused.
        assert!(admit(&service("notification", "dossier"), INTAKE, "guichet").is_err());
        assert!(admit(&service("routing", "signature"), INTAKE, "guichet").is_err());
        // A plain-audience token claiming `service` is refused too.
        let mut forged = service("routing", "dossier");
        forged.audience = "guichet".into();
        assert!(admit(&forged, INTAKE, "guichet").is_err());
        // And routing's token reads no directory.
        assert!(admit(&service("routing", "dossier"), CITIZENS, "guichet").is_err());
    }

    #[test]
    fn an_unknown_method_is_refused() {
        let admin = person(&[Role::Admin]);
        for path in [
            "/guichet.dossier.v1.DossierService/DropEverything",
            "/guichet.nothing.v1.X/Y",
            "/other.Service/Method",
            "",
        ] {
            assert!(admit(&admin, path, "guichet").is_err(), "{path}");
        }
    }
}
