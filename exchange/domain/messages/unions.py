"""The discriminated unions of every message, by `type`: commands, events, and both."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from exchange.domain.messages.common import (
    CommandRejected,
    RequestRejected,
)
from exchange.domain.messages.controls import (
    AccountLimitsSet,
    AuctionCompleted,
    ContractStateChanged,
    ControlMarket,
    ListingChanged,
    MarketControlRejected,
    MarketControlRequested,
    SetAccountLimits,
)
from exchange.domain.messages.dayahead import (
    DayAheadAuctionCompleted,
    DayAheadBidsCollected,
    DayAheadCleared,
    ExclusiveGroupAccepted,
    PlaceExclusiveGroup,
)
from exchange.domain.messages.delivery import (
    BundleDrawn,
    CapacityRecalled,
    DeliveryDisputed,
    DeliveryObligation,
    DeliveryRequested,
    DeliverySettled,
    DisputeDelivery,
    MeteringReported,
    RecallCapacity,
    ReportMetering,
    ResolveDispute,
    StripCascaded,
)
from exchange.domain.messages.funds import (
    CapacityDeposited,
    CapacityWithdrawn,
    DepositCapacity,
    DepositFunds,
    DepositRejected,
    FundsDeposited,
    FundsWithdrawn,
    WithdrawCapacity,
    WithdrawFunds,
)
from exchange.domain.messages.orders import (
    AmendOrder,
    AmendRejected,
    AmendRequested,
    BlockAccepted,
    BookChanged,
    CancelAllOrders,
    CancelAllRequested,
    CancelOrder,
    CancelRejected,
    CancelRequested,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderReduced,
    OrderRejected,
    PlaceBlockOrder,
    PlaceOrder,
    TradeExecuted,
)
from exchange.domain.messages.programmes import (
    ApplicationInfoRequested,
    ApplicationRejected,
    ApplicationSupplemented,
    ApplyForGrant,
    ApproveGrant,
    ConcessionGranted,
    CreateProgramme,
    DiscountPoolFunded,
    EnterpriseRegistered,
    FeeConceded,
    FundDiscountPool,
    GrantApplied,
    GrantApproved,
    GrantConcession,
    PlatformDiscounted,
    ProgrammeCreated,
    RegisterEnterprise,
    RejectApplication,
    RequestApplicationInfo,
    SetVoucherPolicy,
    SupplementApplication,
    VoucherPolicySet,
)

Command = Annotated[
    PlaceOrder
    | CancelOrder
    | DepositFunds
    | DepositCapacity
    | AmendOrder
    | CancelAllOrders
    | ControlMarket
    | PlaceBlockOrder
    | WithdrawFunds
    | WithdrawCapacity
    | ReportMetering
    | DisputeDelivery
    | ResolveDispute
    | RecallCapacity
    | CreateProgramme
    | ApproveGrant
    | SetAccountLimits
    | GrantConcession
    | FundDiscountPool
    | RegisterEnterprise
    | ApplyForGrant
    | RequestApplicationInfo
    | SupplementApplication
    | RejectApplication
    | SetVoucherPolicy
    | PlaceExclusiveGroup,
    Field(discriminator="type"),
]
AnyEvent = Annotated[
    FundsDeposited
    | CapacityDeposited
    | DepositRejected
    | OrderAccepted
    | OrderRejected
    | CancelRequested
    | CancelRejected
    | OrderCancelled
    | TradeExecuted
    | BookChanged
    | CommandRejected
    | BlockAccepted
    | CancelAllRequested
    | AmendRequested
    | AmendRejected
    | OrderAmended
    | OrderReduced
    | MarketControlRequested
    | MarketControlRejected
    | ContractStateChanged
    | AuctionCompleted
    | FundsWithdrawn
    | CapacityWithdrawn
    | RequestRejected
    | DeliveryObligation
    | DeliveryRequested
    | CapacityRecalled
    | MeteringReported
    | DeliveryDisputed
    | DeliverySettled
    | StripCascaded
    | BundleDrawn
    | ProgrammeCreated
    | GrantApproved
    | ListingChanged
    | AccountLimitsSet
    | ConcessionGranted
    | FeeConceded
    | DiscountPoolFunded
    | PlatformDiscounted
    | EnterpriseRegistered
    | GrantApplied
    | ApplicationInfoRequested
    | ApplicationSupplemented
    | ApplicationRejected
    | VoucherPolicySet
    | ExclusiveGroupAccepted
    | DayAheadBidsCollected
    | DayAheadCleared
    | DayAheadAuctionCompleted,
    Field(discriminator="type"),
]
AnyMessage = Annotated[
    PlaceOrder
    | CancelOrder
    | DepositFunds
    | DepositCapacity
    | AmendOrder
    | CancelAllOrders
    | ControlMarket
    | PlaceBlockOrder
    | FundsDeposited
    | CapacityDeposited
    | DepositRejected
    | OrderAccepted
    | OrderRejected
    | CancelRequested
    | CancelRejected
    | OrderCancelled
    | TradeExecuted
    | BookChanged
    | CommandRejected
    | BlockAccepted
    | CancelAllRequested
    | AmendRequested
    | AmendRejected
    | OrderAmended
    | OrderReduced
    | MarketControlRequested
    | MarketControlRejected
    | ContractStateChanged
    | AuctionCompleted
    | WithdrawFunds
    | WithdrawCapacity
    | ReportMetering
    | DisputeDelivery
    | ResolveDispute
    | RecallCapacity
    | CreateProgramme
    | ApproveGrant
    | FundsWithdrawn
    | CapacityWithdrawn
    | RequestRejected
    | DeliveryObligation
    | DeliveryRequested
    | CapacityRecalled
    | MeteringReported
    | DeliveryDisputed
    | DeliverySettled
    | StripCascaded
    | BundleDrawn
    | ProgrammeCreated
    | GrantApproved
    | SetAccountLimits
    | GrantConcession
    | FundDiscountPool
    | ListingChanged
    | AccountLimitsSet
    | ConcessionGranted
    | FeeConceded
    | DiscountPoolFunded
    | PlatformDiscounted
    | RegisterEnterprise
    | ApplyForGrant
    | RequestApplicationInfo
    | SupplementApplication
    | RejectApplication
    | SetVoucherPolicy
    | PlaceExclusiveGroup
    | EnterpriseRegistered
    | GrantApplied
    | ApplicationInfoRequested
    | ApplicationSupplemented
    | ApplicationRejected
    | VoucherPolicySet
    | ExclusiveGroupAccepted
    | DayAheadBidsCollected
    | DayAheadCleared
    | DayAheadAuctionCompleted,
    Field(discriminator="type"),
]
