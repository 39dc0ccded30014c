import CKernels
import Dispatch
import Foundation

/// Run `body(i)` for i in 0..<count on up to two threads (this machine's cores; OpenBLAS
/// calls made inside are small and single-threaded, so nothing is oversubscribed).
@inline(__always)
public func parallelFor(_ count: Int, minimumPerThread: Int = 1, _ body: (Int) -> Void) {
    let threads = Parallelism.inParallelRegion ? 1 : min(Parallelism.threads, max(1, count / max(minimumPerThread, 1)))
    if threads <= 1 {
        for i in 0..<count { body(i) }
        return
    }
    Parallelism.share(count, threads: threads, body)
}

/// Split `0..<count` into one contiguous chunk per thread.
@inline(__always)
public func parallelChunks(_ count: Int, minimumChunk: Int = 4096, _ body: (Range<Int>) -> Void) {
    let threads = Parallelism.inParallelRegion ? 1 : min(Parallelism.threads, max(1, count / minimumChunk))
    if threads <= 1 { body(0..<count); return }
    let step = (count + threads - 1) / threads
    DispatchQueue.concurrentPerform(iterations: threads) { t in
        let lo = t * step, hi = min(count, lo + step)
        if lo < hi { body(lo..<hi) }
    }
}

public enum Parallelism {
    /// Worker threads for GEMMs and pointwise kernels: the cores this process may use, or $SAM2_THREADS.
    nonisolated(unsafe) public static var threads: Int = {
        if let s = ProcessInfo.processInfo.environment["SAM2_THREADS"], let n = Int(s), n > 0 { return min(n, 64) }
        return max(1, min(ProcessInfo.processInfo.activeProcessorCount, 64))
    }()
    /// True while `independentTasks` runs: nested kernels then stay on their own thread.
    nonisolated(unsafe) public private(set) static var inParallelRegion = false

    /// Run many small independent tasks (e.g. attention windows) on all cores; kernels called
    /// inside stay on their task's thread, so the cores are not oversubscribed.
    public static func independentTasks(_ count: Int, _ body: (Int) -> Void) {
        if count <= 1 || threads <= 1 || inParallelRegion {
            for i in 0..<count { body(i) }
            return
        }
        let n = min(threads, count)
        inParallelRegion = true
        share(count, threads: n, body)
        inParallelRegion = false
    }

    /// `[body(0), body(1), ...]` computed as independent tasks (e.g. the small heads that each read
    /// their own token): kernels inside stay on their task's thread.
    public static func map<T>(_ count: Int, _ body: (Int) -> T) -> [T] {
        var results = [T?](repeating: nil, count: count)
        results.withUnsafeMutableBufferPointer { r in
            independentTasks(count) { r[$0] = body($0) }
        }
        return results.map { $0! }
    }

    /// `body(i)` for every i in 0..<count on `threads` threads, each taking the next index when it
    /// is free: when a neighbour slows one core (this is a shared machine), the other takes more
    /// slabs instead of waiting at the end. Each index's work is the same whichever thread runs
    /// it, so results do not depend on the schedule.
    static func share(_ count: Int, threads: Int, _ body: (Int) -> Void) {
        let counter = UnsafeMutablePointer<Int>.allocate(capacity: 1)
        counter.initialize(to: 0)
        defer { counter.deallocate() }
        DispatchQueue.concurrentPerform(iterations: threads) { _ in
            while true {
                let i = sam2_next_index(counter)
                if i >= count { break }
                body(i)
            }
        }
    }
}
