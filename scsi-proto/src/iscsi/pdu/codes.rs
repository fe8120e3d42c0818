//! Numeric codes carried in PDU headers: opcodes, reasons and responses.
//!
//! Every code enum keeps unknown values (`Other(u8)`) so that decoding never loses
//! information and the protocol layer, not the codec, decides what an unknown value means.

/// Declares a `u8` wire code enum with named values and a lossless `Other` fallback.
macro_rules! wire_code {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = $val:expr,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $var,)*
            /// A value this crate has no name for.
            Other(u8),
        }
        impl From<u8> for $name {
            fn from(v: u8) -> Self {
                match v {
                    $($val => $name::$var,)*
                    other => $name::Other(other),
                }
            }
        }
        impl From<$name> for u8 {
            fn from(v: $name) -> u8 {
                match v {
                    $($name::$var => $val,)*
                    $name::Other(other) => other,
                }
            }
        }
    };
}

/// PDU opcodes (RFC 7143 section 11.1.1). Initiator opcodes are 0x00..=0x1f, target opcodes
/// 0x20..=0x3f.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    /// NOP-Out (initiator ping / ping answer).
    NopOut = 0x00,
    /// SCSI Command.
    ScsiCommand = 0x01,
    /// SCSI Task Management Function Request.
    TaskMgmtRequest = 0x02,
    /// Login Request.
    LoginRequest = 0x03,
    /// Text Request.
    TextRequest = 0x04,
    /// SCSI Data-Out (write data).
    DataOut = 0x05,
    /// Logout Request.
    LogoutRequest = 0x06,
    /// SNACK Request.
    Snack = 0x10,
    /// NOP-In (target ping / ping answer).
    NopIn = 0x20,
    /// SCSI Response.
    ScsiResponse = 0x21,
    /// SCSI Task Management Function Response.
    TaskMgmtResponse = 0x22,
    /// Login Response.
    LoginResponse = 0x23,
    /// Text Response.
    TextResponse = 0x24,
    /// SCSI Data-In (read data).
    DataIn = 0x25,
    /// Logout Response.
    LogoutResponse = 0x26,
    /// Ready To Transfer.
    R2t = 0x31,
    /// Asynchronous Message.
    AsyncMessage = 0x32,
    /// Reject.
    Reject = 0x3f,
}

impl Opcode {
    /// Decode the 6-bit opcode field; `None` for reserved and vendor-specific opcodes.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0x00 => Opcode::NopOut,
            0x01 => Opcode::ScsiCommand,
            0x02 => Opcode::TaskMgmtRequest,
            0x03 => Opcode::LoginRequest,
            0x04 => Opcode::TextRequest,
            0x05 => Opcode::DataOut,
            0x06 => Opcode::LogoutRequest,
            0x10 => Opcode::Snack,
            0x20 => Opcode::NopIn,
            0x21 => Opcode::ScsiResponse,
            0x22 => Opcode::TaskMgmtResponse,
            0x23 => Opcode::LoginResponse,
            0x24 => Opcode::TextResponse,
            0x25 => Opcode::DataIn,
            0x26 => Opcode::LogoutResponse,
            0x31 => Opcode::R2t,
            0x32 => Opcode::AsyncMessage,
            0x3f => Opcode::Reject,
            _ => return None,
        })
    }

    /// True for opcodes sent by initiators.
    pub fn is_initiator(self) -> bool {
        (self as u8) < 0x20
    }
}

wire_code! {
    /// Reject reason codes (RFC 7143 section 11.17.1).
    RejectReason {
        /// Data (payload) digest error; the initiator may retry.
        DataDigestError = 0x02,
        /// SNACK reject.
        SnackReject = 0x03,
        /// Protocol error (e.g. SNACK for a status already acknowledged).
        ProtocolError = 0x04,
        /// Command not supported.
        CommandNotSupported = 0x05,
        /// Immediate command reject: too many immediate commands.
        ImmediateCommandReject = 0x06,
        /// Task in progress.
        TaskInProgress = 0x07,
        /// Invalid data ACK.
        InvalidDataAck = 0x08,
        /// Invalid PDU field.
        InvalidPduField = 0x09,
        /// Long operation reject: out of resources to generate a Target Transfer Tag.
        LongOperationReject = 0x0a,
        /// Deprecated (was "negotiation reset").
        NegotiationReset = 0x0b,
        /// Waiting for Logout.
        WaitingForLogout = 0x0c,
    }
}

wire_code! {
    /// Task management function codes (RFC 7143 section 11.5.1).
    TmFunction {
        /// ABORT TASK.
        AbortTask = 1,
        /// ABORT TASK SET.
        AbortTaskSet = 2,
        /// CLEAR ACA.
        ClearAca = 3,
        /// CLEAR TASK SET.
        ClearTaskSet = 4,
        /// LOGICAL UNIT RESET.
        LogicalUnitReset = 5,
        /// TARGET WARM RESET.
        TargetWarmReset = 6,
        /// TARGET COLD RESET.
        TargetColdReset = 7,
        /// TASK REASSIGN.
        TaskReassign = 8,
    }
}

wire_code! {
    /// Task management response codes (RFC 7143 section 11.6.1).
    TmResponse {
        /// Function complete.
        Complete = 0,
        /// Task does not exist.
        TaskDoesNotExist = 1,
        /// LUN does not exist.
        LunDoesNotExist = 2,
        /// Task still allegiant.
        TaskStillAllegiant = 3,
        /// Task allegiance reassignment not supported.
        ReassignmentNotSupported = 4,
        /// Task management function not supported.
        NotSupported = 5,
        /// Function authorization failed.
        AuthorizationFailed = 6,
        /// Function rejected.
        Rejected = 255,
    }
}

wire_code! {
    /// Logout request reason codes (RFC 7143 section 11.14.1).
    LogoutReason {
        /// Close the session (all connections).
        CloseSession = 0,
        /// Close the connection named by CID.
        CloseConnection = 1,
        /// Remove the connection for recovery.
        RemoveConnectionForRecovery = 2,
    }
}

wire_code! {
    /// Logout response codes (RFC 7143 section 11.15.1).
    LogoutResponseCode {
        /// Connection or session closed successfully.
        Closed = 0,
        /// CID not found.
        CidNotFound = 1,
        /// Connection recovery is not supported (ErrorRecoveryLevel < 2).
        RecoveryNotSupported = 2,
        /// Cleanup failed for various reasons.
        CleanupFailed = 3,
    }
}

wire_code! {
    /// Asynchronous event codes (RFC 7143 section 11.9.1).
    AsyncEvent {
        /// A SCSI asynchronous event is reported in the sense data.
        ScsiEvent = 0,
        /// The target requests a logout (Parameter3: Time2Logout seconds).
        LogoutRequested = 1,
        /// The target will drop the connection (Parameter1: CID).
        DropConnection = 2,
        /// The target will drop all connections of the session.
        DropAllConnections = 3,
        /// The target requests parameter renegotiation.
        RequestRenegotiation = 4,
        /// Vendor-specific event.
        VendorSpecific = 255,
    }
}

wire_code! {
    /// SNACK types (RFC 7143 section 11.16.1).
    SnackType {
        /// Data/R2T SNACK.
        DataR2t = 0,
        /// Status SNACK.
        Status = 1,
        /// DataACK.
        DataAck = 2,
        /// R-Data SNACK.
        RData = 3,
    }
}

wire_code! {
    /// SCSI Response "Response" field (RFC 7143 section 11.4.3).
    ScsiResponseCode {
        /// Command completed at target (see Status).
        CommandCompleted = 0x00,
        /// Target failure.
        TargetFailure = 0x01,
    }
}

/// Task attributes carried in the SCSI Command PDU (RFC 7143 section 11.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskAttribute {
    /// Untagged (treated as Simple).
    Untagged,
    /// Simple.
    Simple,
    /// Ordered.
    Ordered,
    /// Head of queue.
    HeadOfQueue,
    /// ACA.
    Aca,
    /// Reserved values 5..=7.
    Reserved(u8),
}

impl TaskAttribute {
    /// Decode the 3-bit ATTR field.
    pub fn from_bits(v: u8) -> Self {
        match v & 0x07 {
            0 => TaskAttribute::Untagged,
            1 => TaskAttribute::Simple,
            2 => TaskAttribute::Ordered,
            3 => TaskAttribute::HeadOfQueue,
            4 => TaskAttribute::Aca,
            other => TaskAttribute::Reserved(other),
        }
    }

    /// Encode to the 3-bit ATTR field.
    pub fn bits(self) -> u8 {
        match self {
            TaskAttribute::Untagged => 0,
            TaskAttribute::Simple => 1,
            TaskAttribute::Ordered => 2,
            TaskAttribute::HeadOfQueue => 3,
            TaskAttribute::Aca => 4,
            TaskAttribute::Reserved(v) => v & 0x07,
        }
    }
}

/// Login stage (CSG/NSG field, RFC 7143 section 11.12.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LoginStage {
    /// Security negotiation.
    Security,
    /// Login operational negotiation.
    Operational,
    /// The reserved value 2; always a protocol error when received.
    Reserved,
    /// Full feature phase.
    FullFeature,
}

impl LoginStage {
    /// Decode the 2-bit stage field.
    pub fn from_bits(v: u8) -> Self {
        match v & 0x03 {
            0 => LoginStage::Security,
            1 => LoginStage::Operational,
            2 => LoginStage::Reserved,
            _ => LoginStage::FullFeature,
        }
    }

    /// Encode to the 2-bit stage field.
    pub fn bits(self) -> u8 {
        match self {
            LoginStage::Security => 0,
            LoginStage::Operational => 1,
            LoginStage::Reserved => 2,
            LoginStage::FullFeature => 3,
        }
    }
}

/// The reserved Initiator Task Tag value; unsolicited target PDUs and initiator NOP-Outs that
/// need no answer carry it.
pub const RESERVED_TAG: u32 = 0xffff_ffff;
