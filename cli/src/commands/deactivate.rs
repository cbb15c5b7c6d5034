//! `coditect deactivate`: free this machine's seat and forget the license
//! here, or free another machine's seat by its activation id.

use proto::DeactivateRequest;
use serde_json::json;

use crate::api::{self, Client, Reply};
use crate::error::{CliError, CliResult};
use crate::license::Context;
use crate::state;
use crate::system;

pub fn run(ctx: &Context<'_>, other_machine: Option<&str>) -> CliResult<()> {
    let st = state::load_license(ctx.paths)?.ok_or_else(|| {
        CliError::user(
            "not_activated",
            "this machine has no CODITECT license to deactivate",
            Some("nothing to do here; to free another machine's seat, run `coditect deactivate --machine ID` on an activated machine (see `coditect license machines`)".to_owned()),
        )
    })?;
    let key = st.license_key.clone().ok_or_else(|| {
        CliError::user(
            "offline_license",
            "this license was imported offline; its seat is managed by your administrator",
            Some("ask your administrator to free the seat".to_owned()),
        )
    })?;
    let server = ctx
        .server
        .map(str::to_owned)
        .or_else(|| st.server.clone())
        .unwrap_or_else(|| api::DEFAULT_SERVER.to_owned());
    let hardware_id = system::hardware_id()?.to_hex();
    let request = DeactivateRequest {
        license_key: key,
        hardware_id,
        activation_id: other_machine.map(str::to_owned),
    };
    let client = Client::new(&server, api::FOREGROUND_TIMEOUT);
    // Freeing another machine's seat: a session on this server is proof
    // of standing besides this machine's own seat.
    let session = match other_machine {
        Some(_) => state::load_session(ctx.paths)?.filter(|s| s.server == server),
        None => None,
    };
    let bearer = session.as_ref().map(|s| s.access_token.as_str());
    let mut reply = ctx
        .printer
        .spin("Deactivating…", || client.deactivate(&request, bearer))?;
    if bearer.is_some() && matches!(&reply, Reply::Refused { status: 401, .. }) {
        // The session has ended: this machine's seat may still do.
        reply = ctx
            .printer
            .spin("Deactivating…", || client.deactivate(&request, None))?;
    }
    match reply {
        Reply::Ok(resp) => {
            let used = resp.license.devices_used;
            let allowed = resp.license.entitlements.max_devices;
            if other_machine.is_none() {
                state::remove_license(ctx.paths)?;
                ctx.printer.success(&format!(
                    "This machine's seat is free ({used}/{allowed} in use); the license was removed from this machine"
                ));
            } else {
                ctx.printer
                    .success(&format!("Seat freed ({used}/{allowed} in use)"));
            }
            ctx.printer.json(&json!({
                "deactivated": resp.activation.id,
                "devices": { "used": used, "allowed": allowed },
                "removed_local_license": other_machine.is_none(),
            }));
            Ok(())
        }
        // Already gone on the server: forgetting it here is what the user wants.
        Reply::Refused { problem, .. }
            if problem.code == "not_activated" && other_machine.is_none() =>
        {
            state::remove_license(ctx.paths)?;
            ctx.printer
                .success("This machine was not active on the server; the license was removed from this machine");
            ctx.printer
                .json(&json!({ "deactivated": null, "removed_local_license": true }));
            Ok(())
        }
        Reply::Refused { problem, .. } => {
            Err(api::refusal_error(&problem.code, &problem.detail, &server))
        }
    }
}
