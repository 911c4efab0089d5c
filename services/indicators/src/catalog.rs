//! Every indicator: its published definition (French for the page, English
//! for the README) and how it is computed from the fact tables.
//!
//! An indicator reads one fact table (with its joins): each row is one item
//! (a request, a call, a visit…) placed in the period by one time column,
//! with a value (a whole number: seconds, units; shown divided by `per`,
//! so days are seconds over 86,400) and, for ratios, a 0/1 flag. The
//! statistic turns a bucket's items into the figure. Percentiles are
//! nearest-rank: p90 is the smallest value that at least 90 % of the items
//! do not exceed (an actual value of an item, never an interpolation).

use crate::config::Config;

/// How a bucket's items become a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    /// Number of items.
    Count,
    /// Mean of the values.
    Mean,
    /// Nearest-rank percentile of the values (50, 90).
    Percentile(u32),
    /// Share of items whose flag is 1.
    Ratio,
    /// Sum of flags over sum of values (units taken over units open).
    RatioOfSums,
    /// Items per hour the town hall is open in the bucket (its calendar).
    PerOpenHour,
    /// Items open at the end of the bucket (backlog): opened before it,
    /// not closed by then.
    OpenAtEnd,
}

impl Stat {
    pub fn name(self) -> &'static str {
        match self {
            Stat::Count => "count",
            Stat::Mean => "mean",
            Stat::Percentile(50) => "p50",
            Stat::Percentile(_) => "p90",
            Stat::Ratio | Stat::RatioOfSums => "ratio",
            Stat::PerOpenHour => "rate",
            Stat::OpenAtEnd => "count",
        }
    }
}

/// An indicator and its SQL.
#[derive(Debug, Clone)]
pub struct Indicator {
    pub key: &'static str,
    pub family: &'static str,
    pub label: &'static str,
    pub definition: String,
    pub definition_en: String,
    /// count, seconds, ratio, per_hour, days.
    pub unit: &'static str,
    pub stat: Stat,
    /// business_hours or calendar.
    pub clock: &'static str,
    /// FROM clause (with joins).
    pub from: &'static str,
    /// Unix seconds that place an item in the period.
    pub time: &'static str,
    /// A whole number (seconds, units), so sums stay exact.
    pub value: String,
    /// What the value is divided by to be shown (86,400: seconds → days).
    pub per: f64,
    pub flag: String,
    pub filter: String,
    /// Dimension → SQL expression of the item's value for it.
    pub cuts: Vec<(&'static str, &'static str)>,
    /// Kind, id, dossier id and dossier reference of an item (drill-down).
    pub item: (&'static str, &'static str, &'static str, &'static str),
    /// OpenAtEnd: the column that closes an item.
    pub closed: &'static str,
}

/// The dimensions a figure can be cut or filtered by.
pub const DIMENSIONS: [&str; 11] = [
    "channel",
    "procedure",
    "version",
    "department",
    "queue",
    "agent",
    "site",
    "service",
    "desk",
    "appointment_type",
    "age",
];

const REQUESTS: &str = "request_fact r LEFT JOIN dossier_fact d ON d.id = r.dossier_id";
const REQUEST_ITEM: (&str, &str, &str, &str) =
    ("request", "r.id", "r.dossier_id", "r.dossier_reference");
const CALLS: &str = "call_fact c";
const CALL_ITEM: (&str, &str, &str, &str) = ("call", "c.id", "''", "''");
const CALLBACKS: &str = "call_fact c JOIN request_fact r ON r.intake_event_id = c.intake_event_id";
const VISITS: &str = "visit_fact v";
const VISIT_ITEM: (&str, &str, &str, &str) = ("visit", "v.id", "''", "''");
const APPOINTMENTS: &str = "appointment_fact p";
const APPOINTMENT_ITEM: (&str, &str, &str, &str) =
    ("appointment", "p.id", "p.dossier_id", "p.reference");
const SIGNATURES: &str = "signature_fact g";
const SIGNATURE_ITEM: (&str, &str, &str, &str) = ("signature", "g.id", "g.dossier_id", "''");

fn request_cuts(agent: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("channel", "r.channel"),
        ("procedure", "r.process_id"),
        ("version", "d.process_id || ' v' || d.process_version"),
        ("department", "d.domain"),
        ("queue", "r.queue_id"),
        ("agent", agent),
    ]
}

/// Every indicator, with the town's parameters in its SQL and its text.
pub fn indicators(cfg: &Config) -> Vec<Indicator> {
    let short = cfg.short_abandon_secs;
    let level = cfg.service_level_secs;
    let target = cfg.service_level_target_percent;
    let fcr = i64::from(cfg.first_contact_days) * 86_400;
    let fcr_days = cfg.first_contact_days;
    let offered = format!(
        "c.direction = 'in' AND c.blocked = 0 AND NOT (c.missed = 1 AND c.waiting_s < {short})"
    );
    let base = Indicator {
        key: "",
        family: "",
        label: "",
        definition: String::new(),
        definition_en: String::new(),
        unit: "count",
        stat: Stat::Count,
        clock: "calendar",
        from: REQUESTS,
        time: "r.received_s",
        value: "0".into(),
        per: 1.0,
        flag: "0".into(),
        filter: "1 = 1".into(),
        cuts: request_cuts("r.first_agent"),
        item: REQUEST_ITEM,
        closed: "",
    };
    // The telephone's offered, answered, abandoned… calls.
    let call = Indicator {
        family: "telephone",
        from: CALLS,
        time: "c.started_s",
        cuts: vec![("queue", "c.queue")],
        item: CALL_ITEM,
        ..base.clone()
    };
    // Served counter visits, by the time their ticket was taken.
    let served = Indicator {
        family: "counter",
        from: VISITS,
        time: "v.issued_s",
        filter: "v.outcome = 'done'".into(),
        cuts: vec![
            ("service", "v.service"),
            ("site", "v.site"),
            ("desk", "v.desk"),
        ],
        item: VISIT_ITEM,
        ..base.clone()
    };
    let request_pct = |key, label, p: u32, first: bool| Indicator {
        key,
        family: "requests",
        label,
        unit: "seconds",
        stat: Stat::Percentile(p),
        clock: "business_hours",
        definition: if first {
            format!(
                "Temps d'ouverture de la mairie entre l'arrivée de la demande dans la file \
                 unifiée et sa première prise en charge par un agent (acceptée ou attribuée), \
                 centile {p} (rang le plus proche). Demandes reçues dans la période ; celles pas \
                 encore prises en charge sont exclues. Nuits, week-ends, jours fériés et \
                 fermetures ne comptent pas."
            )
        } else {
            format!(
                "Temps d'ouverture de la mairie entre l'arrivée de la demande et sa clôture dans \
                 la file (réponse apportée, demande terminée), centile {p} (rang le plus proche). \
                 Demandes reçues dans la période et terminées ; les demandes annulées ou encore \
                 ouvertes sont exclues."
            )
        },
        definition_en: if first {
            format!(
                "Business time (the town's opening hours) from a request entering the unified \
                 queue to its first assignment to an agent, p{p} (nearest rank). Requests received \
                 in the period; those not yet touched are excluded."
            )
        } else {
            format!(
                "Business time from a request entering the queue to its completion, p{p} \
                 (nearest rank). Requests received in the period and completed; cancelled or \
                 open ones are excluded."
            )
        },
        value: if first {
            "r.touch_work_s"
        } else {
            "r.resolve_work_s"
        }
        .into(),
        filter: if first {
            "r.touch_work_s IS NOT NULL"
        } else {
            "r.resolve_work_s IS NOT NULL"
        }
        .into(),
        cuts: request_cuts(if first {
            "r.first_agent"
        } else {
            "r.completed_agent"
        }),
        ..base.clone()
    };
    vec![
        Indicator {
            key: "requests.received",
            family: "requests",
            label: "Demandes reçues",
            definition: "Demandes entrées dans la file unifiée pendant la période, tous canaux \
                         (appels, courriels, courriers, visites, saisies au guichet)."
                .into(),
            definition_en: "Requests that entered the unified queue in the period, every channel."
                .into(),
            ..base.clone()
        },
        request_pct(
            "requests.first_touch_p50",
            "Délai de prise en charge (médiane)",
            50,
            true,
        ),
        request_pct(
            "requests.first_touch_p90",
            "Délai de prise en charge (p90)",
            90,
            true,
        ),
        request_pct(
            "requests.resolution_p50",
            "Délai de traitement (médiane)",
            50,
            false,
        ),
        request_pct(
            "requests.resolution_p90",
            "Délai de traitement (p90)",
            90,
            false,
        ),
        Indicator {
            key: "requests.sla_compliance",
            family: "requests",
            label: "Respect des délais (SLA)",
            unit: "ratio",
            stat: Stat::Ratio,
            clock: "business_hours",
            definition: "Part des demandes à échéance terminées avant leur échéance (calculée en \
                         heures d'ouverture par le routage) et jamais signalées en dépassement. \
                         Demandes reçues dans la période, terminées ou déjà en dépassement ; \
                         celles sans échéance ou encore dans les temps sont exclues."
                .into(),
            definition_en: "Share of requests with an SLA completed by their due time and never \
                            flagged as breached. Requests received in the period that are \
                            completed or already breached; those without an SLA or still within \
                            it are excluded."
                .into(),
            flag: "CASE WHEN r.completed_s IS NOT NULL AND r.completed_s <= r.sla_due_s \
                   AND r.sla_breached = 0 THEN 1 ELSE 0 END"
                .into(),
            filter: "r.sla_due_s IS NOT NULL AND (r.completed_s IS NOT NULL OR r.sla_breached = 1)"
                .into(),
            ..base.clone()
        },
        Indicator {
            key: "requests.first_contact_resolution",
            family: "requests",
            label: "Résolution au premier contact",
            unit: "ratio",
            stat: Stat::Ratio,
            definition: format!(
                "Part des demandes terminées sans que le citoyen ait dû revenir : aucune autre \
                 demande sur le même dossier entre son arrivée et {fcr_days} jours après sa \
                 clôture. Demandes reçues dans la période, terminées et rattachées à un dossier."
            ),
            definition_en: format!(
                "Share of completed requests with no other request on the same dossier from \
                 their arrival until {fcr_days} days after their completion. Requests received in \
                 the period, completed, attached to a dossier."
            ),
            // `next_received_s`: the next request on the dossier (kept at
            // ingest).
            flag: format!(
                "CASE WHEN r.next_received_s IS NULL OR r.next_received_s > r.completed_s + {fcr} \
                 THEN 1 ELSE 0 END"
            ),
            filter: "r.completed_s IS NOT NULL AND r.dossier_id <> ''".into(),
            cuts: request_cuts("r.completed_agent"),
            ..base.clone()
        },
        Indicator {
            key: "calls.offered",
            family: "telephone",
            label: "Appels présentés",
            definition: format!(
                "Appels entrants non bloqués, arrivés pendant la période, hors appelants qui \
                 raccrochent en moins de {short} s d'attente (erreurs de numéro)."
            ),
            definition_en: format!(
                "Inbound, unblocked calls started in the period, excluding callers who hang up \
                 within {short} s of waiting."
            ),
            filter: offered.clone(),
            ..call.clone()
        },
        Indicator {
            key: "calls.answered",
            family: "telephone",
            label: "Appels décrochés",
            definition: "Appels entrants présentés et décrochés par un agent.".into(),
            definition_en: "Offered inbound calls answered by an agent.".into(),
            filter: "c.direction = 'in' AND c.blocked = 0 AND c.missed = 0".into(),
            ..call.clone()
        },
        Indicator {
            key: "calls.abandoned",
            family: "telephone",
            label: "Appels perdus",
            definition: format!(
                "Appels entrants présentés que l'appelant a quittés sans réponse après au moins \
                 {short} s d'attente (messagerie comprise)."
            ),
            definition_en: format!(
                "Offered inbound calls the caller left unanswered after at least {short} s."
            ),
            filter: format!("{offered} AND c.missed = 1"),
            ..call.clone()
        },
        Indicator {
            key: "calls.abandonment_rate",
            family: "telephone",
            label: "Taux d'appels perdus",
            unit: "ratio",
            stat: Stat::Ratio,
            definition: format!(
                "Appels perdus rapportés aux appels présentés (hors raccrochés en moins de \
                 {short} s)."
            ),
            definition_en: format!(
                "Abandoned over offered calls (callers hanging up within {short} s excluded)."
            ),
            flag: "c.missed".into(),
            filter: offered.clone(),
            ..call.clone()
        },
        Indicator {
            key: "calls.average_speed_of_answer",
            family: "telephone",
            label: "Temps moyen d'attente avant réponse",
            unit: "seconds",
            stat: Stat::Mean,
            definition: "Moyenne, sur les appels décrochés, de l'attente entre l'arrivée de \
                         l'appel et le décroché (temps réel, en secondes)."
                .into(),
            definition_en:
                "Mean wait from arrival to answer over answered calls (calendar seconds).".into(),
            value: "c.waiting_s".into(),
            filter: "c.direction = 'in' AND c.blocked = 0 AND c.missed = 0".into(),
            ..call.clone()
        },
        Indicator {
            key: "calls.service_level",
            family: "telephone",
            label: "Niveau de service téléphonique",
            unit: "ratio",
            stat: Stat::Ratio,
            definition: format!(
                "Part des appels présentés décrochés en {level} s au plus (objectif de la \
                 ville : {target} %)."
            ),
            definition_en: format!(
                "Share of offered calls answered within {level} s (the town's target: {target} %)."
            ),
            flag: format!("CASE WHEN c.missed = 0 AND c.waiting_s <= {level} THEN 1 ELSE 0 END"),
            filter: offered.clone(),
            ..call.clone()
        },
        Indicator {
            key: "calls.callbacks_within_sla",
            family: "telephone",
            label: "Rappels faits dans les délais",
            unit: "ratio",
            stat: Stat::Ratio,
            clock: "business_hours",
            definition: format!(
                "Part des appels perdus (après {short} s ou plus) dont la demande de rappel a \
                 été terminée avant son échéance. Appels de la période dont le rappel est fait \
                 ou déjà en retard."
            ),
            definition_en: format!(
                "Share of abandoned calls (after {short} s or more) whose callback request was \
                 completed by its due time; calls of the period whose callback is done or late."
            ),
            from: CALLBACKS,
            time: "c.started_s",
            flag: "CASE WHEN r.completed_s IS NOT NULL AND r.sla_breached = 0 AND \
                   (r.sla_due_s IS NULL OR r.completed_s <= r.sla_due_s) THEN 1 ELSE 0 END"
                .into(),
            filter: format!(
                "{offered} AND c.missed = 1 AND c.intake_event_id <> '' AND \
                 (r.completed_s IS NOT NULL OR r.sla_breached = 1)"
            ),
            cuts: vec![("queue", "c.queue"), ("agent", "r.completed_agent")],
            item: CALL_ITEM,
            ..base.clone()
        },
        Indicator {
            key: "counter.wait_p50",
            family: "counter",
            label: "Attente au guichet (médiane)",
            unit: "seconds",
            stat: Stat::Percentile(50),
            definition: "Attente entre la prise du ticket (ou son transfert) et le début du \
                         service, médiane (rang le plus proche). Visites servies dont le ticket a \
                         été pris dans la période ; les absents sont exclus."
                .into(),
            definition_en: "Wait from ticket (or transfer) to service start, p50 (nearest rank), \
                            served visits whose ticket was taken in the period."
                .into(),
            value: "v.waiting_s".into(),
            ..served.clone()
        },
        Indicator {
            key: "counter.wait_p90",
            family: "counter",
            label: "Attente au guichet (p90)",
            unit: "seconds",
            stat: Stat::Percentile(90),
            definition: "Attente entre la prise du ticket et le début du service, centile 90 \
                         (rang le plus proche). Visites servies de la période."
                .into(),
            definition_en: "Wait from ticket to service start, p90 (nearest rank), served visits."
                .into(),
            value: "v.waiting_s".into(),
            ..served.clone()
        },
        Indicator {
            key: "counter.service_time",
            family: "counter",
            label: "Durée moyenne de service",
            unit: "seconds",
            stat: Stat::Mean,
            definition: "Durée moyenne entre le début et la fin du service au guichet, visites \
                         servies dont le ticket a été pris dans la période."
                .into(),
            definition_en: "Mean time from service start to finish, served visits.".into(),
            value: "v.service_s".into(),
            ..served.clone()
        },
        Indicator {
            key: "counter.tickets_per_hour",
            family: "counter",
            label: "Tickets par heure d'ouverture",
            unit: "per_hour",
            stat: Stat::PerOpenHour,
            clock: "business_hours",
            definition: "Visites terminées (servies ou absents) dont le ticket a été pris dans \
                         la période, rapportées aux heures d'ouverture de la mairie de la période."
                .into(),
            definition_en: "Finished visits (served or no-show) whose ticket was taken in the \
                            period, per opening hour of the town hall."
                .into(),
            from: VISITS,
            time: "v.issued_s",
            filter: "v.ended_s IS NOT NULL".into(),
            cuts: vec![("service", "v.service"), ("site", "v.site")],
            item: VISIT_ITEM,
            ..base.clone()
        },
        Indicator {
            key: "appointments.next_free_slot_days",
            family: "appointments",
            label: "Délai jusqu'au prochain créneau libre",
            unit: "days",
            stat: Stat::Mean,
            definition: "Moyenne, sur les relevés de disponibilité de la période (un par heure, \
                         par type de rendez-vous et par site), du délai entre le relevé et le \
                         premier créneau libre réservable en ligne, en jours. Les relevés sans \
                         aucun créneau libre dans la fenêtre de réservation sont exclus."
                .into(),
            definition_en: "Mean, over the availability samples of the period (hourly, per \
                            appointment type and site), of the days from the sample to the first \
                            free slot bookable online; samples with no free slot are excluded."
                .into(),
            from: "appointment_sample s",
            time: "s.sampled_s",
            value: "s.next_free_s - s.sampled_s".into(),
            per: 86_400.0,
            filter: "s.next_free_s IS NOT NULL".into(),
            cuts: vec![
                ("appointment_type", "s.appointment_type"),
                ("site", "s.site"),
            ],
            item: ("sample", "s.appointment_type || ' ' || s.site", "''", "''"),
            ..base.clone()
        },
        Indicator {
            key: "appointments.booked",
            family: "appointments",
            label: "Rendez-vous pris",
            definition: "Rendez-vous réservés pendant la période (en ligne, par un agent ou une \
                         application), même annulés depuis."
                .into(),
            definition_en: "Appointments booked in the period, even if cancelled since.".into(),
            from: APPOINTMENTS,
            time: "p.booked_s",
            cuts: vec![
                ("appointment_type", "p.appointment_type"),
                ("site", "p.site"),
            ],
            item: APPOINTMENT_ITEM,
            ..base.clone()
        },
        Indicator {
            key: "appointments.lead_time_p50",
            family: "appointments",
            label: "Délai entre réservation et rendez-vous (médiane)",
            unit: "days",
            stat: Stat::Percentile(50),
            definition: "Jours entre la réservation et l'heure du rendez-vous, médiane (rang le \
                         plus proche), rendez-vous réservés dans la période."
                .into(),
            definition_en:
                "Days from booking to the appointment time, p50, bookings of the period.".into(),
            from: APPOINTMENTS,
            time: "p.booked_s",
            value: "p.start_s - p.booked_s".into(),
            per: 86_400.0,
            cuts: vec![
                ("appointment_type", "p.appointment_type"),
                ("site", "p.site"),
            ],
            item: APPOINTMENT_ITEM,
            ..base.clone()
        },
        Indicator {
            key: "appointments.fill_rate",
            family: "appointments",
            label: "Taux de remplissage des créneaux",
            unit: "ratio",
            stat: Stat::RatioOfSums,
            definition: "Part du temps de guichet ouvert aux rendez-vous qui a été réservé \
                         (créneaux pris, honorés ou non, sur créneaux ouverts), d'après le dernier \
                         relevé de chaque jour de la période, par site."
                .into(),
            definition_en: "Share of the desks' open appointment units that were booked (kept or \
                            not), from each day's last availability sample, per site."
                .into(),
            from: "appointment_day a",
            time: "a.day_s",
            value: "a.open_units".into(),
            flag: "a.taken_units".into(),
            filter: "a.open_units > 0".into(),
            cuts: vec![("site", "a.site")],
            item: ("day", "a.site || ' ' || a.day", "''", "''"),
            ..base.clone()
        },
        Indicator {
            key: "appointments.no_show_rate",
            family: "appointments",
            label: "Taux d'absence aux rendez-vous",
            unit: "ratio",
            stat: Stat::Ratio,
            definition: "Part des rendez-vous de la période (par heure du rendez-vous) où le \
                         citoyen ne s'est pas présenté, parmi ceux qui ont eu lieu (présents, \
                         enregistrés à l'accueil ou absents) ; les annulés sont exclus."
                .into(),
            definition_en: "Share of no-shows among the period's appointments that took place \
                            (seen, checked in or no-show); cancelled ones are excluded."
                .into(),
            from: APPOINTMENTS,
            time: "p.start_s",
            flag: "CASE WHEN p.status = 'no_show' THEN 1 ELSE 0 END".into(),
            filter: "p.status IN ('seen', 'checked_in', 'no_show')".into(),
            cuts: vec![
                ("appointment_type", "p.appointment_type"),
                ("site", "p.site"),
            ],
            item: APPOINTMENT_ITEM,
            ..base.clone()
        },
        Indicator {
            key: "appointments.checkin_delay_p50",
            family: "appointments",
            label: "Arrivée par rapport à l'heure du rendez-vous (médiane)",
            unit: "seconds",
            stat: Stat::Percentile(50),
            definition: "Secondes entre l'heure du rendez-vous et l'enregistrement du citoyen à \
                         la borne ou à l'accueil (négatif : en avance), médiane, rendez-vous de la \
                         période enregistrés."
                .into(),
            definition_en: "Seconds from the appointment time to the citizen's check-in \
                            (negative: early), p50, checked-in appointments of the period."
                .into(),
            from: APPOINTMENTS,
            time: "p.start_s",
            value: "p.checked_in_s - p.start_s".into(),
            filter: "p.checked_in_s IS NOT NULL".into(),
            cuts: vec![
                ("appointment_type", "p.appointment_type"),
                ("site", "p.site"),
            ],
            item: APPOINTMENT_ITEM,
            ..base.clone()
        },
        Indicator {
            key: "signatures.completion_rate",
            family: "signatures",
            label: "Taux de signature",
            unit: "ratio",
            stat: Stat::Ratio,
            definition: "Part des demandes de signature créées dans la période et arrivées à \
                         leur terme qui ont été signées (les autres : refusées ou expirées) ; \
                         les demandes en cours ou retirées par la ville sont exclues."
                .into(),
            definition_en: "Share of signature requests created in the period and ended that \
                            were signed (others declined or expired); pending or withdrawn ones \
                            are excluded."
                .into(),
            from: SIGNATURES,
            time: "g.requested_s",
            flag: "CASE WHEN g.status = 'signed' THEN 1 ELSE 0 END".into(),
            filter: "g.status IN ('signed', 'declined', 'expired')".into(),
            cuts: vec![("procedure", "g.template")],
            item: SIGNATURE_ITEM,
            ..base.clone()
        },
        Indicator {
            key: "signatures.time_to_sign_p50",
            family: "signatures",
            label: "Délai de signature (médiane)",
            unit: "seconds",
            stat: Stat::Percentile(50),
            definition: "Temps réel entre la création de la demande de signature et la \
                         signature du dernier signataire, médiane, demandes signées créées dans la \
                         période."
                .into(),
            definition_en: "Calendar time from the signature request to the last signature, p50, \
                            signed requests created in the period."
                .into(),
            from: SIGNATURES,
            time: "g.requested_s",
            value: "g.completed_s - g.requested_s".into(),
            filter: "g.completed_s IS NOT NULL".into(),
            cuts: vec![("procedure", "g.template")],
            item: SIGNATURE_ITEM,
            ..base.clone()
        },
        Indicator {
            key: "dossiers.backlog",
            family: "dossiers",
            label: "Dossiers ouverts (stock)",
            stat: Stat::OpenAtEnd,
            definition: "Dossiers ouverts à la fin de chaque intervalle : ouverts avant, pas \
                         encore clos (un dossier rouvert compte de nouveau). Découpe par âge : \
                         moins de 7 jours, 7 à 30 jours, plus de 30 jours."
                .into(),
            definition_en: "Dossiers open at the end of each bucket: opened before it and not \
                            closed by then. Cut by age: under 7 days, 7 to 30 days, over 30 days."
                .into(),
            from: "dossier_fact d",
            time: "d.opened_s",
            closed: "d.closed_s",
            cuts: vec![
                ("procedure", "d.process_id"),
                ("version", "d.process_id || ' v' || d.process_version"),
                ("department", "d.domain"),
                ("age", ""),
            ],
            item: ("dossier", "d.id", "d.id", "d.reference"),
            ..base.clone()
        },
    ]
}
