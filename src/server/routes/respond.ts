import type { FastifyReply } from 'fastify';
import type { ServerContext } from '../context.js';
import { toApiError } from '../http/errors.js';
import { streamEvents } from '../http/sse.js';
import type { Accumulator } from '../protocol/accumulator.js';
import { Generation, type PromptRequest, type TaggedDelta } from './generation.js';
import { pickBestOf, type BestOf } from '../protocol/best-of.js';
import { logRequest } from './common.js';
import { requestIdOf } from '../http/request-id.js';
import { StreamInterval } from './stream-interval.js';

export interface GenerationReply<Chunk, Response> {
  /** The route's name in request logs. */
  route: string;
  /** The id logged for the request. */
  id: string;
  requests: PromptRequest[];
  stream: boolean;
  /** Builds the protocol's accumulator once the generation has started (it may read the clock). */
  accumulator: (generation: Generation) => Accumulator<Chunk, Response>;
  /** best_of above n (never streamed): the engine requests generate best_of samples each, the answer keeps n. */
  bestOf?: BestOf | null;
}

/**
 * The one pipeline of the generation routes: start the engine requests, then either open the
 * event stream at once and send each delta as one server-sent event as it comes (whichever
 * prompt it belongs to), or wait for the first deltas (so that an engine failure is an HTTP
 * error) and fold the same chunks into the one JSON response; log the request and release it
 * whatever happens.
 */
export async function replyWithGeneration<Chunk, Response>(ctx: ServerContext, reply: FastifyReply, options: GenerationReply<Chunk, Response>): Promise<void> {
  const request = reply.request;
  const generation = new Generation(ctx, options.requests, reply.raw);
  const accumulator = options.accumulator(generation);
  try {
    if (options.stream) {
      await streamEvents(
        reply,
        async (sse) => {
          for (const chunk of accumulator.opening()) await sse.send(chunk);
          const interval = new StreamInterval(ctx.streamInterval);
          // Written as the engine hands each delta over: a step's frames go out in one pass.
          await generation.forward({
            write(prompt, delta) {
              const due = interval.take(prompt, delta);
              if (due === null) return true;
              return sse.sendNow(accumulator.frame ? accumulator.frame(prompt, due) : accumulator.chunk(prompt, due));
            },
            writable: () => sse.writable(),
            get closed() {
              return sse.closed;
            },
          });
          for (const chunk of accumulator.closing()) await sse.send(chunk);
        },
        (e) => toApiError(e).body(),
      );
    } else {
      await generation.ready();
      const fold = accumulator.fold();
      for (const chunk of accumulator.opening()) fold.add(chunk);
      if (options.bestOf) {
        const all: TaggedDelta[] = [];
        for await (const tagged of generation.deltas()) all.push(tagged);
        const best = pickBestOf(all, options.bestOf);
        for (const { prompt, delta } of best.deltas) fold.add(accumulator.chunk(prompt, delta));
        accumulator.usage.addUnreturned(best.discardedTokens);
      } else {
        for await (const { prompt, delta } of generation.deltas()) fold.add(accumulator.chunk(prompt, delta));
      }
      for (const chunk of accumulator.closing()) fold.add(chunk);
      if (generation.clientGone) reply.hijack();
      else await reply.send(fold.result());
    }
    const { promptTokens, completionTokens } = accumulator.usage;
    logRequest(ctx, {
      route: options.route,
      id: options.id,
      requestId: requestIdOf(request),
      promptTokens,
      completionTokens,
      ms: generation.elapsedMs(),
      outcome: generation.clientGone ? 'client gone' : generation.timedOut ? 'timed out' : 'done',
    });
  } finally {
    generation.dispose();
  }
}
