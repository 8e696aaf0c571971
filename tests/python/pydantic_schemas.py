"""Prints the JSON Schemas Pydantic generates (model_json_schema) for a few everyday models, as one
JSON object name -> schema. Used by tests/json-schema-corpus.test.ts."""
import json
from datetime import date, datetime
from enum import Enum
from typing import Annotated, Literal, Optional, Union
from uuid import UUID

from pydantic import BaseModel, Field


class Priority(str, Enum):
    low = "low"
    medium = "medium"
    high = "high"


class Address(BaseModel):
    street: str
    city: str
    postcode: Annotated[str, Field(pattern=r"^[0-9]{5}$")]
    country: str = "FR"


class Person(BaseModel):
    name: Annotated[str, Field(min_length=1, max_length=40)]
    age: Annotated[int, Field(ge=0, le=130)]
    email: Optional[str] = None
    address: Optional[Address] = None
    tags: list[str] = []


class Task(BaseModel):
    id: UUID
    title: str
    priority: Priority
    due: Optional[date] = None
    done: bool = False


class Cat(BaseModel):
    pet_type: Literal["cat"]
    meows: int


class Dog(BaseModel):
    pet_type: Literal["dog"]
    barks: float


class Owner(BaseModel):
    pet: Union[Cat, Dog] = Field(discriminator="pet_type")
    name: str


class Comment(BaseModel):
    author: str
    text: str
    replies: list["Comment"] = []


class Measurement(BaseModel):
    sensor: str
    value: Annotated[float, Field(gt=-50, lt=150)]
    at: datetime
    unit: Literal["C", "F"]


class ShellAnswer(BaseModel):
    command: str
    explanation: str
    risk: Literal["low", "medium", "high"]
    needs_sudo: bool


class Invoice(BaseModel):
    number: Annotated[str, Field(pattern=r"^INV-[0-9]{4}$")]
    lines: Annotated[list[tuple[str, int]], Field(min_length=1, max_length=5)]
    total: Annotated[float, Field(ge=0)]


models = [Person, Task, Owner, Comment, Measurement, ShellAnswer, Invoice]
print(json.dumps({m.__name__: m.model_json_schema() for m in models}))
