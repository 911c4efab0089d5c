//! gRPC `IndicatorService`: supervisors, admins and other municipal
//! systems read the figures; agents do not.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use guichet_platform::clock::SharedClock;
use guichet_platform::grpc::{internal_err, invalid_argument};
use guichet_proto::convert::{datetime, timestamp};
use guichet_proto::indicators::v1 as pb;
use pb::indicator_service_server::IndicatorService;
use tonic::{Request, Response, Status};

use crate::ingest::Stats;
use crate::query::{self, Engine, Granularity, Query, Refused};

#[derive(Clone)]
pub struct IndicatorApi {
    pub engine: Engine,
    pub clock: SharedClock,
    pub stats: Arc<Stats>,
}

fn refusal(r: Refused) -> Status {
    invalid_argument(&r.field, r.reason)
}

fn period(p: &Option<pb::Period>, field: &str) -> Result<(DateTime<Utc>, DateTime<Utc>), Status> {
    let p = p
        .as_ref()
        .ok_or_else(|| invalid_argument(field, "a period (start, end) is required"))?;
    let start = p
        .start
        .as_ref()
        .and_then(datetime)
        .ok_or_else(|| invalid_argument(&format!("{field}.start"), "is required"))?;
    let end = p
        .end
        .as_ref()
        .and_then(datetime)
        .ok_or_else(|| invalid_argument(&format!("{field}.end"), "is required"))?;
    if start >= end {
        return Err(invalid_argument(
            field,
            "the period must end after it starts",
        ));
    }
    Ok((start, end))
}

fn granularity(g: i32) -> Result<Granularity, Status> {
    Ok(match pb::Granularity::try_from(g) {
        Ok(pb::Granularity::Unspecified) => Granularity::Whole,
        Ok(pb::Granularity::Hour) => Granularity::Hour,
        Ok(pb::Granularity::Day) => Granularity::Day,
        Ok(pb::Granularity::Week) => Granularity::Week,
        Ok(pb::Granularity::Month) => Granularity::Month,
        Err(_) => {
            return Err(invalid_argument(
                "granularity",
                format!("{g} is not a granularity"),
            ));
        }
    })
}

fn filters(f: &[pb::Filter]) -> Vec<(String, String)> {
    f.iter()
        .map(|f| (f.dimension.clone(), f.value.clone()))
        .collect()
}

impl IndicatorApi {
    fn query(&self, r: &pb::GetFiguresRequest) -> Result<Query, Status> {
        let (start, end) = period(&r.period, "period")?;
        let q = Query {
            start,
            end,
            granularity: granularity(r.granularity)?,
            cut: r.cut.clone(),
            indicators: r.indicators.clone(),
            filters: filters(&r.filters),
        };
        self.engine.check(&q).map_err(refusal)?;
        Ok(q)
    }

    pub async fn figures(
        &self,
        r: &pb::GetFiguresRequest,
    ) -> Result<pb::GetFiguresResponse, Status> {
        let q = self.query(r)?;
        let (figures, not_cut) = self
            .engine
            .figures(&q)
            .await
            .map_err(internal_err("read figures"))?;
        Ok(pb::GetFiguresResponse {
            empty: figures.iter().all(|f| f.empty),
            figures: figures
                .into_iter()
                .map(|f| pb::Figure {
                    indicator: f.indicator.to_owned(),
                    cut_value: f.cut_value,
                    bucket_start: Some(timestamp(f.bucket)),
                    value: f.value,
                    count: f.count,
                    empty: f.empty,
                })
                .collect(),
            not_cut: not_cut.into_iter().map(str::to_owned).collect(),
        })
    }

    pub async fn compare(
        &self,
        r: &pb::ComparePeriodsRequest,
    ) -> Result<pb::ComparePeriodsResponse, Status> {
        let (rs, re) = period(&r.reference, "reference")?;
        let (cs, ce) = period(&r.compared, "compared")?;
        let mk = |start, end| Query {
            start,
            end,
            granularity: Granularity::Whole,
            cut: r.cut.clone(),
            indicators: r.indicators.clone(),
            filters: filters(&r.filters),
        };
        let (a, b) = (mk(rs, re), mk(cs, ce));
        // Both periods take the same cut, filters and indicators.
        self.engine.check(&a).map_err(refusal)?;
        let (fa, _) = self
            .engine
            .figures(&a)
            .await
            .map_err(internal_err("read figures"))?;
        let (fb, _) = self
            .engine
            .figures(&b)
            .await
            .map_err(internal_err("read figures"))?;
        // (catalog position, cut value) → the figure of each period (one
        // bucket each: the whole period).
        let order = |k: &str| self.engine.indicators.iter().position(|i| i.key == k);
        let mut pairs: BTreeMap<(Option<usize>, String), [Option<&query::Figure>; 2]> =
            BTreeMap::new();
        for (side, figures) in [&fa, &fb].into_iter().enumerate() {
            for f in figures {
                let pair = pairs
                    .entry((order(f.indicator), f.cut_value.clone()))
                    .or_default();
                pair[side] = pair[side].or(Some(f));
            }
        }
        // Cut, a period without data gives one '' row of zeros: dropped
        // where the other period has cut values for that indicator.
        if !r.cut.is_empty() {
            let with_values: HashSet<Option<usize>> = pairs
                .keys()
                .filter(|(_, c)| !c.is_empty())
                .map(|(i, _)| *i)
                .collect();
            pairs.retain(|(i, c), _| !c.is_empty() || !with_values.contains(i));
        }
        let comparisons = pairs
            .into_iter()
            .map(|((_, c), [x, y])| {
                let indicator = x.or(y).map(|f| f.indicator).unwrap_or_default();
                let (xv, xn) = x.map(|f| (f.value, f.count)).unwrap_or((0.0, 0));
                let (yv, yn) = y.map(|f| (f.value, f.count)).unwrap_or((0.0, 0));
                let change = (xn > 0 && yn > 0 && xv != 0.0).then(|| yv / xv - 1.0);
                pb::Comparison {
                    indicator: indicator.to_owned(),
                    cut_value: c,
                    reference: xv,
                    compared: yv,
                    reference_count: xn,
                    compared_count: yn,
                    change,
                    text: change_text(change, xn, yn),
                }
            })
            .collect();
        Ok(pb::ComparePeriodsResponse { comparisons })
    }

    pub async fn drill(&self, r: &pb::DrillDownRequest) -> Result<pb::DrillDownResponse, Status> {
        let (start, end) = period(&r.period, "period")?;
        let i = self
            .engine
            .indicator(&r.indicator)
            .ok_or_else(|| {
                invalid_argument(
                    "indicator",
                    format!("`{}` is not an indicator", r.indicator),
                )
            })?
            .clone();
        let q = Query {
            start,
            end,
            granularity: Granularity::Whole,
            cut: r.cut.clone(),
            indicators: vec![r.indicator.clone()],
            filters: filters(&r.filters),
        };
        self.engine.check(&q).map_err(refusal)?;
        let (selected, _) = self.engine.selected(&q);
        if selected.is_empty() {
            return Err(invalid_argument(
                "cut",
                format!("`{}` cannot be cut or filtered that way", r.indicator),
            ));
        }
        let size = match r.page_size {
            0 => 50,
            n if n > 500 => return Err(invalid_argument("page_size", "must be at most 500")),
            n => n as usize,
        };
        let offset = if r.page_token.is_empty() {
            0
        } else {
            r.page_token.parse::<usize>().map_err(|_| {
                invalid_argument("page_token", "is not a token from a previous page")
            })?
        };
        let (items, total) = self
            .engine
            .items(&i, &q, &r.cut_value, offset, size)
            .await
            .map_err(internal_err("read items"))?;
        let next = offset + items.len();
        Ok(pb::DrillDownResponse {
            items: items
                .into_iter()
                .map(|it| pb::Item {
                    kind: it.kind.to_owned(),
                    id: it.id,
                    dossier_id: it.dossier_id,
                    dossier_reference: it.dossier_reference,
                    at: Some(timestamp(it.at)),
                    value: it.value,
                    counted: it.counted,
                    cut_value: it.cut_value,
                })
                .collect(),
            next_page_token: if next < total {
                next.to_string()
            } else {
                String::new()
            },
            total: total as u64,
        })
    }

    pub fn definitions(&self) -> Vec<pb::Definition> {
        self.engine
            .indicators
            .iter()
            .map(|i| pb::Definition {
                key: i.key.to_owned(),
                family: i.family.to_owned(),
                label: i.label.to_owned(),
                definition: i.definition.clone(),
                definition_en: i.definition_en.clone(),
                unit: i.unit.to_owned(),
                statistic: i.stat.name().to_owned(),
                clock: i.clock.to_owned(),
                cuts: i
                    .cuts
                    .iter()
                    .map(|(k, _)| (*k).to_owned())
                    .filter(|k| k != "agent" || self.engine.per_agent)
                    .collect(),
            })
            .collect()
    }

    pub async fn queue_now(&self) -> Result<pb::QueueNow, Status> {
        let now = self.clock.now();
        let (channels, agents) = query::queue_now(&self.engine.db)
            .await
            .map_err(internal_err("read queue"))?;
        Ok(pb::QueueNow {
            channels: channels
                .into_iter()
                .map(|(channel, waiting, oldest)| pb::ChannelWaiting {
                    channel,
                    waiting,
                    oldest_wait_seconds: (now.timestamp() - oldest).max(0) as u32,
                })
                .collect(),
            agents: agents
                .into_iter()
                .map(|(presence, agents)| pb::PresenceCount { presence, agents })
                .collect(),
            as_of: Some(timestamp(now)),
            events_applied: self
                .stats
                .applied
                .load(std::sync::atomic::Ordering::Relaxed),
            events_skipped: self
                .stats
                .skipped
                .load(std::sync::atomic::Ordering::Relaxed),
        })
    }
}

/// "−52 % par rapport à la période de référence".
pub fn change_text(change: Option<f64>, reference: u64, compared: u64) -> String {
    match change {
        Some(c) => {
            let pct = (c * 100.0).round() as i64;
            let sign = match pct {
                p if p > 0 => "+",
                p if p < 0 => "\u{2212}",
                _ => "",
            };
            format!(
                "{sign}{} % par rapport à la période de référence",
                pct.abs()
            )
        }
        None if reference == 0 && compared == 0 => "aucune donnée sur les deux périodes".into(),
        None if reference == 0 => "aucune donnée sur la période de référence".into(),
        None if compared == 0 => "aucune donnée sur la période comparée".into(),
        None => "référence nulle : pas de rapport".into(),
    }
}

#[tonic::async_trait]
impl IndicatorService for IndicatorApi {
    async fn list_definitions(
        &self,
        _req: Request<pb::ListDefinitionsRequest>,
    ) -> Result<Response<pb::ListDefinitionsResponse>, Status> {
        Ok(Response::new(pb::ListDefinitionsResponse {
            definitions: self.definitions(),
        }))
    }

    async fn get_figures(
        &self,
        req: Request<pb::GetFiguresRequest>,
    ) -> Result<Response<pb::GetFiguresResponse>, Status> {
        Ok(Response::new(self.figures(req.get_ref()).await?))
    }

    async fn compare_periods(
        &self,
        req: Request<pb::ComparePeriodsRequest>,
    ) -> Result<Response<pb::ComparePeriodsResponse>, Status> {
        Ok(Response::new(self.compare(req.get_ref()).await?))
    }

    async fn drill_down(
        &self,
        req: Request<pb::DrillDownRequest>,
    ) -> Result<Response<pb::DrillDownResponse>, Status> {
        Ok(Response::new(self.drill(req.get_ref()).await?))
    }

    async fn export_csv(
        &self,
        req: Request<pb::ExportCsvRequest>,
    ) -> Result<Response<pb::ExportCsvResponse>, Status> {
        let defs = self.definitions();
        let label = |k: &str| {
            defs.iter()
                .find(|d| d.key == k)
                .map(|d| d.label.clone())
                .unwrap_or_default()
        };
        let (filename, csv) = match &req.get_ref().table {
            Some(pb::export_csv_request::Table::Figures(r)) => {
                let f = self.figures(r).await?;
                let mut csv = crate::csv::Csv::new(&[
                    "indicateur",
                    "libellé",
                    "découpe",
                    "début",
                    "valeur",
                    "nombre",
                    "sans donnée",
                ]);
                for x in &f.figures {
                    csv.row(&[
                        x.indicator.clone(),
                        label(&x.indicator),
                        x.cut_value.clone(),
                        crate::csv::paris(x.bucket_start.as_ref()),
                        crate::csv::number(x.value),
                        x.count.to_string(),
                        if x.empty { "oui" } else { "non" }.into(),
                    ]);
                }
                ("indicateurs.csv", csv.finish())
            }
            Some(pb::export_csv_request::Table::Comparison(r)) => {
                let c = self.compare(r).await?;
                let mut csv = crate::csv::Csv::new(&[
                    "indicateur",
                    "libellé",
                    "découpe",
                    "référence",
                    "comparée",
                    "nombre référence",
                    "nombre comparée",
                    "évolution",
                ]);
                for x in &c.comparisons {
                    csv.row(&[
                        x.indicator.clone(),
                        label(&x.indicator),
                        x.cut_value.clone(),
                        crate::csv::number(x.reference),
                        crate::csv::number(x.compared),
                        x.reference_count.to_string(),
                        x.compared_count.to_string(),
                        x.text.clone(),
                    ]);
                }
                ("comparaison.csv", csv.finish())
            }
            Some(pb::export_csv_request::Table::Items(r)) => {
                let mut all = Vec::new();
                let mut r = r.clone();
                r.page_size = 500;
                loop {
                    let page = self.drill(&r).await?;
                    all.extend(page.items);
                    if page.next_page_token.is_empty() {
                        break;
                    }
                    r.page_token = page.next_page_token;
                }
                let mut csv = crate::csv::Csv::new(&[
                    "type",
                    "identifiant",
                    "dossier",
                    "référence",
                    "date",
                    "valeur",
                    "compté",
                    "découpe",
                ]);
                for x in &all {
                    csv.row(&[
                        x.kind.clone(),
                        x.id.clone(),
                        x.dossier_id.clone(),
                        x.dossier_reference.clone(),
                        crate::csv::paris(x.at.as_ref()),
                        crate::csv::number(x.value),
                        if x.counted { "oui" } else { "non" }.into(),
                        x.cut_value.clone(),
                    ]);
                }
                ("elements.csv", csv.finish())
            }
            None => {
                return Err(invalid_argument(
                    "table",
                    "figures, comparison or items is required",
                ));
            }
        };
        Ok(Response::new(pb::ExportCsvResponse {
            filename: filename.into(),
            csv: csv.into_bytes(),
        }))
    }

    async fn get_queue_now(
        &self,
        _req: Request<pb::GetQueueNowRequest>,
    ) -> Result<Response<pb::QueueNow>, Status> {
        Ok(Response::new(self.queue_now().await?))
    }
}
