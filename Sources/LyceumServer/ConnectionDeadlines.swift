import NIOCore
import NIOHTTPTypes

/// Closes connections whose clients are too slow to be anyone's honest traffic: a request head that has not
/// arrived `headerTimeout` after the connection opened (or `idleTimeout` after the previous answer), or a
/// body not complete `bodyTimeout` after its head. A slow-header or slow-body client (dripping a byte at a
/// time, which an idle timer never sees) holds a connection for a bounded time only. Nothing is armed while
/// the server itself is answering, so a long stream is never cut.
final class ConnectionDeadlines: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    struct Timeouts: Sendable {
        var header: TimeAmount
        var body: TimeAmount
        var idle: TimeAmount
    }

    let timeouts: Timeouts
    private var timer: Scheduled<Void>?

    init(timeouts: Timeouts) { self.timeouts = timeouts }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { arm(context, timeouts.header) }
    }

    func channelActive(context: ChannelHandlerContext) {
        arm(context, timeouts.header)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) { disarm() }

    func channelInactive(context: ChannelHandlerContext) {
        disarm()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head: arm(context, timeouts.body)
        case .end: disarm()
        case .body: break
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { arm(context, timeouts.idle) }
        context.write(data, promise: promise)
    }

    private func arm(_ context: ChannelHandlerContext, _ after: TimeAmount) {
        disarm()
        let channel = context.channel
        timer = context.eventLoop.scheduleTask(in: after) { channel.close(promise: nil) }
    }

    private func disarm() {
        timer?.cancel()
        timer = nil
    }
}
