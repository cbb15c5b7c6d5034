//! `coditect init` and `coditect status`: the first licensed commands.

use std::path::{Path, PathBuf};

use serde_json::json;
use verifier::ProjectLimit;

use super::licensed;
use crate::error::{CliError, CliResult};
use crate::format::{format_date, format_time, plan_name, rfc3339};
use crate::license::Context;
use crate::state::{self, Project};
use crate::system;

const MARKER_DIR: &str = ".coditect";
const MARKER_FILE: &str = "project.json";

fn resolve(dir: Option<&Path>) -> CliResult<PathBuf> {
    let dir = dir.map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    std::fs::create_dir_all(&dir).map_err(|e| {
        CliError::user(
            "bad_dir",
            format!("cannot use {}: {e}", dir.display()),
            None,
        )
    })?;
    dir.canonicalize().map_err(|e| {
        CliError::user(
            "bad_dir",
            format!("cannot use {}: {e}", dir.display()),
            None,
        )
    })
}

fn is_project(dir: &Path) -> bool {
    dir.join(MARKER_DIR).join(MARKER_FILE).is_file()
}

pub fn init(ctx: &Context<'_>, dir: Option<&Path>) -> CliResult<()> {
    let l = licensed(ctx)?;
    let dir = resolve(dir)?;
    let mut projects = state::load_projects(ctx.paths)?;
    // Projects whose folder is gone no longer count.
    projects.projects.retain(|p| is_project(&p.path));
    if projects.projects.iter().any(|p| p.path == dir) {
        ctx.printer
            .success(&format!("{} is already a CODITECT project", dir.display()));
        ctx.printer
            .json(&json!({ "initialized": true, "path": dir, "already": true }));
        return Ok(());
    }
    // A folder that already has a project marker (copied, or set up with
    // another state directory) still takes a place on this license.
    let existing = u32::try_from(projects.projects.len()).unwrap_or(u32::MAX);
    let limit = l.claims.entitlements.max_projects;
    if !limit.allows(existing) {
        let ProjectLimit::Limited(max) = limit else {
            return Err(CliError::unexpected(
                "internal",
                "unlimited plan refused a project",
            ));
        };
        let names: Vec<String> = projects
            .projects
            .iter()
            .map(|p| p.path.display().to_string())
            .collect();
        return Err(CliError::user(
            "project_limit",
            format!(
                "your plan ({}) allows {max} projects, and {existing} are set up: {}",
                plan_name(&l.claims.tier),
                names.join(", ")
            ),
            Some(format!(
                "upgrade to Pilot Professional for unlimited projects (change the plan in the billing portal on your account page, link below), or remove a project's {MARKER_DIR} folder to free its place"
            )),
        )
        .with_url(crate::error::account_url(&ctx.server_for(&l.state))));
    }
    if is_project(&dir) {
        projects.projects.push(Project {
            path: dir.clone(),
            created_at: system::now(),
        });
        state::save_projects(ctx.paths, &projects)?;
        ctx.printer
            .success(&format!("{} is already a CODITECT project", dir.display()));
        ctx.printer
            .json(&json!({ "initialized": true, "path": dir, "already": true }));
        return Ok(());
    }
    let now = system::now();
    let marker = dir.join(MARKER_DIR).join(MARKER_FILE);
    let content = json!({
        "format": "coditect-project-v1",
        "created_at": rfc3339(now),
        "license_id": l.claims.license_id,
    });
    let bytes = serde_json::to_vec_pretty(&content)
        .map_err(|e| CliError::unexpected("internal", e.to_string()))?;
    state::write_private(&marker, &bytes).map_err(|e| {
        CliError::user(
            "write_failed",
            format!("cannot write {}: {e}", marker.display()),
            None,
        )
    })?;
    projects.projects.push(Project {
        path: dir.clone(),
        created_at: now,
    });
    state::save_projects(ctx.paths, &projects)?;
    ctx.printer.success("CODITECT initialized");
    ctx.printer.json(&json!({
        "initialized": true,
        "path": dir,
        "projects": { "used": projects.projects.len(), "allowed": match limit {
            ProjectLimit::Limited(n) => Some(n),
            ProjectLimit::Unlimited => None,
        }},
    }));
    Ok(())
}

pub fn status(ctx: &Context<'_>, dir: Option<&Path>) -> CliResult<()> {
    let l = licensed(ctx)?;
    let dir = dir.map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let dir = dir.canonicalize().unwrap_or(dir);
    let project = is_project(&dir);
    let c = &l.claims;
    if project {
        ctx.printer
            .line(&format!("Project:  {} (CODITECT project)", dir.display()));
    } else {
        ctx.printer.line(&format!(
            "Project:  {} is not a CODITECT project; run `coditect init` there",
            dir.display()
        ));
    }
    ctx.printer.line(&format!(
        "License:  {} for {}, until {}",
        plan_name(&c.tier),
        c.email,
        format_date(c.license_expires_at)
    ));
    ctx.printer.line(&format!(
        "Token:    valid offline until {}",
        format_time(c.expires_at.min(c.license_expires_at))
    ));
    ctx.printer.json(&json!({
        "path": dir,
        "project": project,
        "license": { "tier": c.tier, "plan": plan_name(&c.tier), "user": c.email,
                     "expires_at": rfc3339(c.license_expires_at) },
        "token_expires_at": rfc3339(c.expires_at),
    }));
    Ok(())
}
