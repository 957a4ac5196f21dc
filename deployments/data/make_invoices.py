"""Generate the demo's invoice e-mails (deployments/data/invoices.jsonl) with Faker, seeded.

Each row: ``prompt`` (an e-mail about an invoice, written from one of 25 phrasings, with distractors such
as due dates and order numbers), ``response`` (the invoice as JSON: vendor, invoice_number, date in ISO
form, amount as a number, currency code) and ``template`` (which phrasing). The fleet file splits by
``template``, so the phrasings of the validation and test splits never appear in training: the score
measures extraction from unseen wording, not template recall.

    python deployments/data/make_invoices.py     # needs Faker (the demo extra installs it)
"""

from __future__ import annotations

import json
import random
from datetime import date, timedelta
from pathlib import Path

from faker import Faker

PER_TEMPLATE = 10
OUT = Path(__file__).with_name("invoices.jsonl")
SYMBOL = {"USD": "$", "EUR": "€", "GBP": "£"}

TEMPLATES = [
    "Hello {to},\n\nPlease find attached invoice {number} from {vendor}, dated {date}. The total due is {amount}.\n\nBest regards,\n{sender}",
    "Subject: Invoice {number}\n\n{vendor} issued an invoice for {amount} on {date}. Kindly arrange payment within 30 days (by {due}).\n{sender}",
    "Hi {to}, a reminder that payment for {number} ({amount}), which {vendor} sent on {date}, is still open. Thanks, {sender}",
    "Dear accounts team,\nwe received invoice no. {number} from {vendor}. Invoice date: {date}. Amount: {amount}. PO reference {po}.\nRegards, {sender}",
    "{vendor} - billing\nInvoice: {number}\nIssued: {date}\nDue: {due}\nTotal: {amount}\nQuestions? Reply to this e-mail.",
    "Hey {to}! Forwarding the bill from {vendor}: #{number}, {amount}, dated {date}. Can you approve it before {due}? {sender}",
    "Good morning,\n\nAttached is {vendor}'s invoice {number} of {date} for the amount of {amount}. Our order {po} is covered by it.\n\nKind regards\n{sender}",
    "FYI {to} - {vendor} charged us {amount} (invoice {number}, {date}). Filed under cost center {cc}.",
    "Invoice {number} | {vendor} | {date} | {amount} | payment terms net 30",
    "Hi,\nThe invoice from {vendor} for last month's services came in today. Number {number}, date {date}, total {amount} incl. tax.\nCheers, {sender}",
    "To: {to}\nRe: outstanding balance\n\nOur records show invoice {number} dated {date} from {vendor} over {amount} remains unpaid. Please settle it by {due}.",
    "Please process payment: vendor {vendor}, invoice number {number}, invoice date {date}, amount due {amount}. Thank you, {sender}",
    "{to}, can you check this one? {vendor} sent {number} on {date} asking for {amount}, but our PO {po} was smaller.",
    "New invoice received\nFrom: {vendor}\nReference: {number}\nDate of issue: {date}\nGrand total: {amount}\nThis message was generated automatically.",
    "Hello,\nthank you for your business. Invoice {number} ({date}) totals {amount}.\nSincerely,\nThe {vendor} billing team",
    "We have booked {vendor}'s invoice {number} for {amount}. It is dated {date} and due on {due}. - {sender}",
    "Quick note: {amount} owed to {vendor}, see invoice {number} from {date}. I put it in the approval queue. {sender}",
    "Dear {to},\n\nplease note the corrected invoice {number} from {vendor}: the total is now {amount}, invoice date {date}. The earlier copy is void.\n\n{sender}",
    "Accounts payable update - {date}: {vendor} invoice {number}, {amount}, status: awaiting approval.",
    "Hi team,\n{vendor} just e-mailed invoice {number}. It's for {amount} and the date on it is {date}. Due {due}.\n{sender}",
    "Statement from {vendor}\nInvoice {number} issued {date}\nBalance due {amount}\nPlease quote the invoice number with your payment.",
    "{sender} here. Approving invoice {number} ({vendor}, {date}) for {amount}, charge to {cc}.",
    "Dear Sir or Madam, enclosed please find our invoice {number} dated {date} in the amount of {amount}. Yours faithfully, {vendor}",
    "Reminder #2: {vendor} invoice {number} over {amount} from {date} is overdue since {due}. Please pay as soon as possible.",
    "Hi {to}, the {vendor} invoice ({number}) for {amount} dated {date} is attached. PO {po}. Thanks!",
]


def fmt_date(d: date, style: int) -> str:
    return [d.strftime("%B {0}, %Y").format(d.day), f"{d.day} {d.strftime('%B %Y')}", d.strftime("%m/%d/%Y"),
            d.isoformat(), d.strftime("%b {0}, %Y").format(d.day)][style]  # fmt: skip


def fmt_amount(value: float, currency: str, style: int) -> str:
    number = f"{value:,.2f}"
    return [
        f"{SYMBOL[currency]}{number}",
        f"{number} {currency}",
        f"{currency} {number}",
        f"{SYMBOL[currency]} {number}",
    ][style]


def invoice_number(rng: random.Random, d: date) -> str:
    return rng.choice([f"INV-{rng.randint(10000, 99999)}", f"{d.year}-{rng.randint(1, 9999):04d}",
                       f"A-{rng.randint(100000, 999999)}", f"{rng.choice('BCFMNRST')}{rng.randint(1000, 9999)}"])  # fmt: skip


def row(fake: Faker, rng: random.Random, template: int) -> dict:
    d = date(2024, 1, 1) + timedelta(days=rng.randint(0, 700))
    currency, value = rng.choice(["USD", "EUR", "GBP"]), round(rng.uniform(20, 25000), 2)
    vendor, number = fake.company(), invoice_number(rng, d)
    style = rng.randint(0, 4)
    text = TEMPLATES[template].format(
        to=fake.first_name(), sender=fake.name(), vendor=vendor, number=number, date=fmt_date(d, style),
        due=fmt_date(d + timedelta(days=30), style), amount=fmt_amount(value, currency, rng.randint(0, 3)),
        po=f"PO-{rng.randint(1000, 9999)}", cc=f"CC-{rng.randint(100, 999)}",
    )  # fmt: skip
    answer = {"vendor": vendor, "invoice_number": number, "date": d.isoformat(), "amount": value, "currency": currency}
    return {"prompt": text, "response": json.dumps(answer), "template": f"t{template:02d}"}


def main() -> None:
    Faker.seed(7)
    fake, rng = Faker("en_US"), random.Random(7)
    rows = [row(fake, rng, t) for t in range(len(TEMPLATES)) for _ in range(PER_TEMPLATE)]
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"{len(rows)} rows from {len(TEMPLATES)} phrasings -> {OUT}")


if __name__ == "__main__":
    main()
