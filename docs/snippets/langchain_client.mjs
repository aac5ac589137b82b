// Use aiforge from LangChain.js (README, "Use aiforge from LangChain, LangChain.js and LlamaIndex").
// Start `aiforge serve chat=text-generation e5=sentence-embeddings:multilingual-e5-small`, then
// `npm install @langchain/openai @langchain/core` and `node langchain_client.mjs`.
// tests/serve/test_langchain.py runs this exact file against a test server.
import { ChatOpenAI, OpenAIEmbeddings } from "@langchain/openai";
import { ChatPromptTemplate } from "@langchain/core/prompts";
import { StringOutputParser } from "@langchain/core/output_parsers";

const baseURL = process.env.AIFORGE_URL ?? "http://127.0.0.1:8000/v1";
const apiKey = process.env.AIFORGE_API_KEY ?? "none"; // the server's key, if it has one

const chat = new ChatOpenAI({ model: "chat", temperature: 0, maxTokens: 48, apiKey, configuration: { baseURL } });
const embeddings = new OpenAIEmbeddings({ model: "e5", apiKey, configuration: { baseURL } });

const texts = [
  "The warranty lasts two years.",
  "Refunds are paid within 14 days.",
  "The pump starts at 40 degrees.",
];
const question = "How long does the warranty last?";

// retrieve: the text nearest to the question (e5's vectors are normalised: dot product = cosine)
const vectors = await embeddings.embedDocuments(texts);
const query = await embeddings.embedQuery(question);
const scores = vectors.map((v) => v.reduce((sum, x, i) => sum + x * query[i], 0));
const nearest = texts[scores.indexOf(Math.max(...scores))];

// answer from it
const prompt = ChatPromptTemplate.fromMessages([
  ["system", "Answer the question in one short sentence using only the context."],
  ["human", "Context: {context}\n\nQuestion: {question}"],
]);
const chain = prompt.pipe(chat).pipe(new StringOutputParser());
console.log(nearest);
console.log(await chain.invoke({ context: nearest, question }));
