//! proptest strategies for every payload struct and every message type.
//!
//! Sizes are kept small (strings ≤ 12 chars, collections ≤ 3 items, data ≤ 64 bytes) so every
//! generated frame fits the 4 MiB frame limit; oversized frames have their own properties.
//! Optional fields are generated both `None` and `Some`.
//!
//! Values the wire cannot carry unchanged are generated around, each for the reason given where it
//! happens: see [`exec_failure_kind`] and [`unknown_message`].

use std::net::{Ipv4Addr, Ipv6Addr};

use moat_protocol::payload::bootstrap::{
    BlockRoot, BlockRootUpper, DirMount, DiskMount, EnvVar, FileMount, GuestBootstrap, HandoffInit,
    Ipv4Config, Ipv6Config, MountFlags, Network, SecurityProfile, TmpfsMount,
};
use moat_protocol::payload::bulk::{BulkAccepted, BulkCancel, BulkCredit, BulkFinish, BulkOffer};
use moat_protocol::payload::core::{
    BulkTransportReady, ClockSync, CoreError, CoreErrorKind, ExecControl, FormatCapability,
    InitAck, InitFailureReason, InitResolved, Ready, RelayClientDisconnected, ResolvedUser,
    RootDiskGrow, RootDiskState, Touched, WorkloadFailure, WorkloadFailureDisposition,
};
use moat_protocol::payload::exec::{
    Consumed, Data, ExecExited, ExecFailed, ExecFailureKind, ExecLimits, ExecRequest, ExecResize,
    ExecRlimit, ExecSignal, ExecStarted, ExecStdinError,
};
use moat_protocol::payload::fs::{
    FsEntryInfo, FsEntryKind, FsOp, FsOpenOptions, FsRequest, FsResponse, FsResponseData,
    FsSetAttrs,
};
use moat_protocol::payload::tcp::{TcpConnect, TcpFailed};
use moat_protocol::payload::workload::{
    WorkloadFreeze, WorkloadFrozen, WorkloadThaw, WorkloadThawMode, WorkloadThawed,
    WorkloadTransportCredit,
};
use moat_protocol::{Flags, Message, MessageType, UnknownMessage};
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use proptest::sample::select;

/// Any text, including non-ASCII, up to 12 characters.
pub(crate) fn text() -> impl Strategy<Value = String> + Clone {
    "\\PC{0,12}"
}

fn texts() -> impl Strategy<Value = Vec<String>> + Clone {
    vec(text(), 0..3)
}

fn data() -> impl Strategy<Value = Data> {
    vec(any::<u8>(), 0..64).prop_map(|data| Data { data })
}

fn exec_limits() -> impl Strategy<Value = ExecLimits> + Clone {
    any::<[u32; 5]>().prop_map(|[a, b, c, d, e]| ExecLimits {
        max_executions: a,
        input_limit: b,
        output_limit: c,
        stdin_chunk_size: d,
        output_chunk_size: e,
    })
}

fn rlimit() -> impl Strategy<Value = ExecRlimit> + Clone {
    (text(), any::<u64>(), any::<u64>()).prop_map(|(resource, soft, hard)| ExecRlimit {
        resource,
        soft,
        hard,
    })
}

fn env_var() -> impl Strategy<Value = EnvVar> + Clone {
    (text(), text()).prop_map(|(key, value)| EnvVar { key, value })
}

fn mount_flags() -> impl Strategy<Value = MountFlags> + Clone {
    any::<[bool; 4]>().prop_map(|[readonly, noexec, nosuid, nodev]| MountFlags {
        readonly,
        noexec,
        nosuid,
        nodev,
    })
}

fn block_root() -> impl Strategy<Value = BlockRoot> {
    let upper = prop_oneof![
        (text(), text()).prop_map(|(device, fstype)| BlockRootUpper::Device { device, fstype }),
        of(any::<u32>()).prop_map(|size_mib| BlockRootUpper::Tmpfs { size_mib }),
    ];
    prop_oneof![
        (text(), of(text())).prop_map(|(device, fstype)| BlockRoot::DiskImage { device, fstype }),
        (text(), upper).prop_map(|(lower, upper)| BlockRoot::OciErofs { lower, upper }),
    ]
}

fn network() -> impl Strategy<Value = Network> {
    let v4 = || any::<[u8; 4]>().prop_map(Ipv4Addr::from);
    let v6 = || any::<[u8; 16]>().prop_map(Ipv6Addr::from);
    let ipv4 =
        (v4(), any::<u8>(), v4(), of(v4())).prop_map(|(address, prefix_len, gateway, dns)| {
            Ipv4Config { address, prefix_len, gateway, dns }
        });
    let ipv6 =
        (v6(), any::<u8>(), v6(), of(v6())).prop_map(|(address, prefix_len, gateway, dns)| {
            Ipv6Config { address, prefix_len, gateway, dns }
        });
    (text(), any::<[u8; 6]>(), any::<u16>(), of(ipv4), of(ipv6))
        .prop_map(|(interface, mac, mtu, ipv4, ipv6)| Network { interface, mac, mtu, ipv4, ipv6 })
}

fn mounts()
-> impl Strategy<Value = (Vec<DirMount>, Vec<FileMount>, Vec<DiskMount>, Vec<TmpfsMount>)> {
    let dir = (text(), text(), mount_flags()).prop_map(|(tag, guest_path, flags)| DirMount {
        tag,
        guest_path,
        flags,
    });
    let file =
        (text(), text(), text(), mount_flags()).prop_map(|(tag, filename, guest_path, flags)| {
            FileMount { tag, filename, guest_path, flags }
        });
    let disk = (text(), text(), of(text()), mount_flags())
        .prop_map(|(id, guest_path, fstype, flags)| DiskMount { id, guest_path, fstype, flags });
    let tmpfs = (text(), of(any::<u32>()), of(any::<u32>()), mount_flags())
        .prop_map(|(path, size_mib, mode, flags)| TmpfsMount { path, size_mib, mode, flags });
    (vec(dir, 0..3), vec(file, 0..3), vec(disk, 0..3), vec(tmpfs, 0..3))
}

fn handoff_init() -> impl Strategy<Value = HandoffInit> {
    (text(), texts(), of(text()), vec(env_var(), 0..3))
        .prop_map(|(cmd, args, cwd, env)| HandoffInit { cmd, args, cwd, env })
}

pub(crate) fn bootstrap() -> impl Strategy<Value = GuestBootstrap> {
    let profile = select(vec![SecurityProfile::Default, SecurityProfile::Restricted]);
    let system = (of(text()), of(text()), of(network()), vec(rlimit(), 0..3));
    let exec = (of(text()), of(text()), vec(env_var(), 0..3), profile, of(handoff_init()));
    (any::<bool>(), of(block_root()), mounts(), system, exec, of(exec_limits())).prop_map(
        |(init_failure_ack, block_root, mounts, system, exec, exec_limits)| {
            let (dir_mounts, file_mounts, disk_mounts, tmpfs_mounts) = mounts;
            let (hostname, host_alias, network, rlimits) = system;
            let (user, default_cwd, default_env, security_profile, handoff_init) = exec;
            GuestBootstrap {
                init_failure_ack,
                block_root,
                dir_mounts,
                file_mounts,
                disk_mounts,
                tmpfs_mounts,
                hostname,
                host_alias,
                network,
                rlimits,
                user,
                default_cwd,
                default_env,
                security_profile,
                handoff_init,
                exec_limits,
            }
        },
    )
}

/// Any `Ready`. With `exec_control` the encoder switches to an indefinite-length map, as the
/// reference's flattened relay extension does; the decoder reads both shapes.
pub(crate) fn ready() -> impl Strategy<Value = Ready> {
    let capability = || of(any::<u8>().prop_map(|max_format| FormatCapability { max_format }));
    let bulk = (text(), text(), any::<[u8; 16]>()).prop_map(|(profile, port, connection_id)| {
        BulkTransportReady { profile, port, connection_id }
    });
    let control = (any::<u8>(), text(), any::<[u8; 16]>())
        .prop_map(|(version, endpoint, connection)| ExecControl { version, endpoint, connection });
    let timings = any::<[u64; 3]>();
    let transports = (of(bulk), capability(), capability());
    let rest = (of(any::<u8>()), of(exec_limits()), of(control));
    (timings, text(), transports, rest).prop_map(|(timings, agent_version, transports, rest)| {
        let [boot_time_ns, init_time_ns, ready_time_ns] = timings;
        let (bulk_transport, relay_lease, local_transport) = transports;
        let (workload_transport_barrier_version, exec_limits, exec_control) = rest;
        Ready {
            boot_time_ns,
            init_time_ns,
            ready_time_ns,
            agent_version,
            bulk_transport,
            relay_lease,
            local_transport,
            workload_transport_barrier_version,
            exec_limits,
            exec_control,
        }
    })
}

fn core_error() -> impl Strategy<Value = CoreError> {
    let kind = select(vec![
        CoreErrorKind::InitializationFailed,
        CoreErrorKind::MalformedMessage,
        CoreErrorKind::UnsupportedMessageType,
        CoreErrorKind::UnsupportedProtocolGeneration,
        CoreErrorKind::InvalidFlags,
        CoreErrorKind::InvalidPayload,
        CoreErrorKind::InvalidSession,
        CoreErrorKind::CapabilityUnavailable,
    ]);
    // `Unknown` encodes as "unknown", which re-decodes as `Unknown`: it round trips.
    let init_failure = select(vec![
        InitFailureReason::UserNotFound,
        InitFailureReason::GroupNotFound,
        InitFailureReason::Unknown,
    ]);
    let disposition = select(vec![
        WorkloadFailureDisposition::Unavailable,
        WorkloadFailureDisposition::RecoveryRequired,
        WorkloadFailureDisposition::Unknown,
    ]);
    let workload = (text(), disposition)
        .prop_map(|(attempt_id, disposition)| WorkloadFailure { attempt_id, disposition });
    (kind, text(), of(text()), of(init_failure), of(workload)).prop_map(
        |(kind, message, offending_type, init_failure, workload_failure)| CoreError {
            kind,
            message,
            offending_type,
            init_failure,
            workload_failure,
        },
    )
}

fn credit() -> impl Strategy<Value = WorkloadTransportCredit> + Clone {
    any::<[u64; 4]>().prop_map(|[control_bytes, control_frames, bulk_bytes, bulk_frames]| {
        WorkloadTransportCredit { control_bytes, control_frames, bulk_bytes, bulk_frames }
    })
}

fn bulk_offer() -> impl Strategy<Value = BulkOffer> + Clone {
    (any::<u8>(), any::<u32>(), any::<u64>()).prop_map(
        |(format, max_record_payload, guest_to_host_credit_limit)| BulkOffer {
            format,
            max_record_payload,
            guest_to_host_credit_limit,
        },
    )
}

fn exec_request() -> impl Strategy<Value = ExecRequest> {
    let session = (any::<bool>(), any::<u16>(), any::<u16>(), vec(rlimit(), 0..3));
    (text(), texts(), texts(), of(text()), of(text()), session).prop_map(
        |(cmd, args, env, cwd, user, (tty, rows, cols, rlimits))| ExecRequest {
            cmd,
            args,
            env,
            cwd,
            user,
            tty,
            rows,
            cols,
            rlimits,
        },
    )
}

/// Any failure kind. `Unrecognized` never holds one of the ten known strings: such a value
/// encodes as that string and decodes as the known variant, so it cannot round trip.
pub(crate) fn exec_failure_kind() -> impl Strategy<Value = ExecFailureKind> {
    let known = select(vec![
        ExecFailureKind::NotFound,
        ExecFailureKind::PermissionDenied,
        ExecFailureKind::NotExecutable,
        ExecFailureKind::BadCwd,
        ExecFailureKind::BadArgs,
        ExecFailureKind::ResourceLimit,
        ExecFailureKind::UserSetupFailed,
        ExecFailureKind::OutOfMemory,
        ExecFailureKind::PtySetupFailed,
        ExecFailureKind::Other,
    ]);
    let unrecognized = prop_oneof![text(), "[a-z_]{1,20}"]
        .prop_filter("a known kind string re-decodes as the known kind", |s| {
            matches!(ExecFailureKind::from_wire(s), ExecFailureKind::Unrecognized(_))
        })
        .prop_map(ExecFailureKind::Unrecognized);
    prop_oneof![known, unrecognized]
}

fn exec_failed() -> impl Strategy<Value = ExecFailed> {
    (exec_failure_kind(), of(any::<i32>()), of(text()), text(), of(text())).prop_map(
        |(kind, errno, errno_name, message, stage)| ExecFailed {
            kind,
            errno,
            errno_name,
            message,
            stage,
        },
    )
}

fn set_attrs() -> impl Strategy<Value = FsSetAttrs> + Clone {
    let ids = (of(any::<u32>()), of(any::<u32>()), of(any::<u32>()));
    let sizes = (of(any::<u64>()), of(any::<i64>()), of(any::<i64>()));
    (ids, sizes).prop_map(|((mode, uid, gid), (size, atime, mtime))| FsSetAttrs {
        mode,
        uid,
        gid,
        size,
        atime,
        mtime,
    })
}

fn open_options() -> impl Strategy<Value = FsOpenOptions> {
    (any::<[bool; 6]>(), of(any::<u32>()), of(text())).prop_map(
        |([read, write, append, create, truncate, create_new], mode, user)| FsOpenOptions {
            read,
            write,
            append,
            create,
            truncate,
            create_new,
            mode,
            user,
        },
    )
}

/// Every one of the 19 operations.
pub(crate) fn fs_op() -> impl Strategy<Value = FsOp> {
    let h = any::<u64>;
    prop_oneof![
        text().prop_map(|path| FsOp::RealPath { path }),
        (text(), any::<bool>())
            .prop_map(|(path, follow_symlink)| FsOp::Stat { path, follow_symlink }),
        (text(), any::<bool>(), set_attrs()).prop_map(|(path, follow_symlink, attrs)| {
            FsOp::SetStat { path, follow_symlink, attrs }
        }),
        text().prop_map(|path| FsOp::List { path }),
        text().prop_map(|path| FsOp::ReadLink { path }),
        (text(), text(), of(text())).prop_map(|(target, link_path, user)| FsOp::Symlink {
            target,
            link_path,
            user
        }),
        (text(), of(any::<u32>()), of(text())).prop_map(|(path, mode, user)| FsOp::Mkdir {
            path,
            mode,
            user
        }),
        text().prop_map(|path| FsOp::Remove { path }),
        (text(), any::<bool>()).prop_map(|(path, recursive)| FsOp::RemoveDir { path, recursive }),
        (text(), text()).prop_map(|(src, dst)| FsOp::Copy { src, dst }),
        (text(), text()).prop_map(|(src, dst)| FsOp::Rename { src, dst }),
        (text(), open_options()).prop_map(|(path, options)| FsOp::OpenFile { path, options }),
        text().prop_map(|path| FsOp::OpenDir { path }),
        h().prop_map(|handle| FsOp::CloseHandle { handle }),
        (h(), h(), of(h())).prop_map(|(handle, offset, len)| FsOp::Read { handle, offset, len }),
        (h(), h(), of(h())).prop_map(|(handle, offset, len)| FsOp::Write { handle, offset, len }),
        (h(), of(any::<u32>())).prop_map(|(handle, limit)| FsOp::ReadDir { handle, limit }),
        h().prop_map(|handle| FsOp::FStat { handle }),
        (h(), set_attrs()).prop_map(|(handle, attrs)| FsOp::FSetStat { handle, attrs }),
    ]
}

fn entry_info() -> impl Strategy<Value = FsEntryInfo> + Clone {
    let kind =
        select(vec![FsEntryKind::File, FsEntryKind::Dir, FsEntryKind::Symlink, FsEntryKind::Other]);
    let times = (of(any::<i64>()), of(any::<i64>()), of(any::<i64>()));
    (text(), kind, any::<u64>(), any::<u32>(), any::<u32>(), any::<u32>(), times).prop_map(
        |(path, kind, size, mode, uid, gid, (modified, atime, mtime))| FsEntryInfo {
            path,
            kind,
            size,
            mode,
            modified,
            uid,
            gid,
            atime,
            mtime,
        },
    )
}

fn fs_response() -> impl Strategy<Value = FsResponse> {
    let data = prop_oneof![
        entry_info().prop_map(FsResponseData::Stat),
        vec(entry_info(), 0..3).prop_map(FsResponseData::List),
        any::<u64>().prop_map(FsResponseData::Handle),
        text().prop_map(FsResponseData::Path),
    ];
    (any::<bool>(), of(text()), of(data)).prop_map(|(ok, error, data)| FsResponse {
        ok,
        error,
        data,
    })
}

fn consumed() -> impl Strategy<Value = Consumed> {
    any::<u64>().prop_map(|consumed| Consumed { consumed })
}

fn root_disk_grow() -> impl Strategy<Value = RootDiskGrow> {
    any::<u64>().prop_map(|size_bytes| RootDiskGrow { size_bytes })
}

/// Any message of type `t`. The match is exhaustive, so a new type does not compile until it has
/// a strategy.
pub(crate) fn message_of(t: MessageType) -> BoxedStrategy<Message> {
    use MessageType as T;
    match t {
        T::Bootstrap => bootstrap().prop_map(|b| Message::Bootstrap(Box::new(b))).boxed(),
        T::InitResolved => any::<(u32, u32)>()
            .prop_map(|(uid, gid)| {
                Message::InitResolved(InitResolved { default_user: ResolvedUser { uid, gid } })
            })
            .boxed(),
        T::InitAck => {
            any::<bool>().prop_map(|failure| Message::InitAck(InitAck { failure })).boxed()
        }
        T::Ready => ready().prop_map(Message::Ready).boxed(),
        T::Shutdown => Just(Message::Shutdown).boxed(),
        T::RelayClientDisconnected => (any::<u32>(), any::<u32>(), of(any::<[u8; 16]>()))
            .prop_map(|(id_start, id_end_exclusive, incarnation)| {
                Message::RelayClientDisconnected(RelayClientDisconnected {
                    id_start,
                    id_end_exclusive,
                    incarnation,
                })
            })
            .boxed(),
        T::ClockSync => any::<u64>()
            .prop_map(|unix_time_nanos| Message::ClockSync(ClockSync { unix_time_nanos }))
            .boxed(),
        T::Ping => Just(Message::Ping).boxed(),
        T::Pong => Just(Message::Pong).boxed(),
        T::Touch => Just(Message::Touch).boxed(),
        T::Touched => {
            any::<u64>().prop_map(|activity_seq| Message::Touched(Touched { activity_seq })).boxed()
        }
        T::Error => core_error().prop_map(Message::Error).boxed(),
        T::WorkloadFreeze => (texts(), text(), credit())
            .prop_map(|(external_mount_tags, attempt_id, host_input)| {
                Message::WorkloadFreeze(WorkloadFreeze {
                    external_mount_tags,
                    attempt_id,
                    host_input,
                })
            })
            .boxed(),
        T::WorkloadFrozen => (text(), any::<u64>(), credit(), any::<bool>())
            .prop_map(|(attempt_id, guest_bulk_bytes_target, input_credit, synced)| {
                Message::WorkloadFrozen(WorkloadFrozen {
                    attempt_id,
                    guest_bulk_bytes_target,
                    input_credit,
                    external_mounts_synced: synced,
                })
            })
            .boxed(),
        T::WorkloadThaw => {
            (text(), select(vec![WorkloadThawMode::Continue, WorkloadThawMode::Restore]))
                .prop_map(|(attempt_id, mode)| {
                    Message::WorkloadThaw(WorkloadThaw { attempt_id, mode })
                })
                .boxed()
        }
        T::WorkloadThawed => text()
            .prop_map(|attempt_id| Message::WorkloadThawed(WorkloadThawed { attempt_id }))
            .boxed(),
        T::WorkloadTransportCredit => credit().prop_map(Message::WorkloadTransportCredit).boxed(),
        T::RootDiskPrepare => root_disk_grow().prop_map(Message::RootDiskPrepare).boxed(),
        T::RootDiskGrow => root_disk_grow().prop_map(Message::RootDiskGrow).boxed(),
        T::RootDiskState => any::<(u64, u64)>()
            .prop_map(|(filesystem_bytes, device_bytes)| {
                Message::RootDiskState(RootDiskState { filesystem_bytes, device_bytes })
            })
            .boxed(),
        T::BulkAccepted => (any::<[u8; 3]>(), any::<u32>(), any::<[u64; 2]>())
            .prop_map(|([kind, flows, format], max_record_payload, [h2g, g2h])| {
                Message::BulkAccepted(BulkAccepted {
                    kind,
                    flows,
                    format,
                    max_record_payload,
                    host_to_guest_credit_limit: h2g,
                    guest_to_host_credit_limit: g2h,
                })
            })
            .boxed(),
        T::BulkCredit => (any::<[u8; 2]>(), any::<[u64; 2]>())
            .prop_map(|([kind, flow], [consumed_offset, credit_limit])| {
                Message::BulkCredit(BulkCredit { kind, flow, consumed_offset, credit_limit })
            })
            .boxed(),
        T::BulkFinish => (any::<[u8; 2]>(), any::<u64>())
            .prop_map(|([kind, flow], final_offset)| {
                Message::BulkFinish(BulkFinish { kind, flow, final_offset })
            })
            .boxed(),
        T::BulkCancel => (any::<[u8; 2]>(), text())
            .prop_map(|([kind, reason], message)| {
                Message::BulkCancel(BulkCancel { kind, reason, message })
            })
            .boxed(),
        T::ExecRequest => exec_request().prop_map(Message::ExecRequest).boxed(),
        T::ExecStarted => {
            any::<u32>().prop_map(|pid| Message::ExecStarted(ExecStarted { pid })).boxed()
        }
        T::ExecStdin => data().prop_map(Message::ExecStdin).boxed(),
        T::ExecStdinError => (of(any::<i32>()), of(text()), text())
            .prop_map(|(errno, errno_name, message)| {
                Message::ExecStdinError(ExecStdinError { errno, errno_name, message })
            })
            .boxed(),
        T::ExecStdout => data().prop_map(Message::ExecStdout).boxed(),
        T::ExecStderr => data().prop_map(Message::ExecStderr).boxed(),
        T::ExecExited => {
            any::<i32>().prop_map(|code| Message::ExecExited(ExecExited { code })).boxed()
        }
        T::ExecFailed => exec_failed().prop_map(Message::ExecFailed).boxed(),
        T::ExecResize => any::<(u16, u16)>()
            .prop_map(|(rows, cols)| Message::ExecResize(ExecResize { rows, cols }))
            .boxed(),
        T::ExecSignal => {
            any::<i32>().prop_map(|signal| Message::ExecSignal(ExecSignal { signal })).boxed()
        }
        T::ExecOutputAck => consumed().prop_map(Message::ExecOutputAck).boxed(),
        T::ExecStdinAck => consumed().prop_map(Message::ExecStdinAck).boxed(),
        T::FsRequest => (fs_op(), of(bulk_offer()))
            .prop_map(|(op, bulk)| Message::FsRequest(FsRequest { op, bulk }))
            .boxed(),
        T::FsResponse => fs_response().prop_map(Message::FsResponse).boxed(),
        T::FsData => data().prop_map(Message::FsData).boxed(),
        T::TcpConnect => (text(), any::<u16>(), of(bulk_offer()))
            .prop_map(|(host, port, bulk)| Message::TcpConnect(TcpConnect { host, port, bulk }))
            .boxed(),
        T::TcpConnected => Just(Message::TcpConnected).boxed(),
        T::TcpData => data().prop_map(Message::TcpData).boxed(),
        T::TcpEof => Just(Message::TcpEof).boxed(),
        T::TcpClose => Just(Message::TcpClose).boxed(),
        T::TcpClosed => Just(Message::TcpClosed).boxed(),
        T::TcpFailed => text().prop_map(|error| Message::TcpFailed(TcpFailed { error })).boxed(),
    }
}

/// A message whose type is not in the catalogue, with any payload bytes and any flags except
/// `0x08`. Both exclusions are lossy, not errors: a catalogue name would decode as that type, and
/// flags `0x08` make the receiver read the body as a raw bulk record.
pub(crate) fn unknown_message() -> impl Strategy<Value = Message> {
    let name = prop_oneof!["core\\.[a-z_.]{0,20}", "\\PC{0,20}"]
        .prop_filter("a catalogue name decodes as its type", |t| {
            MessageType::from_wire_name(t).is_none()
        });
    let flags = any::<u8>().prop_filter("0x08 marks a raw bulk record", |b| *b != 0x08);
    (name, flags, vec(any::<u8>(), 0..64)).prop_map(|(t, flags, payload)| {
        Message::Unknown(UnknownMessage { t, flags: Flags::from_bits(flags), payload })
    })
}
